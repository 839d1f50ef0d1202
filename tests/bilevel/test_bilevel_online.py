"""Truncated hypergradients of real training (bilevel.online) against float64 central finite
differences: per-tensor lr schedules and weight decays of Adam/AdamW, per-weight decay, example
weights and an input-noise strength, on mlp_digits, charlm and a from_module GRU task."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaopt import tasks, zoo
from metaopt.rule import init_states
from bilevel.examples import examples_of
from bilevel.online import draw, online_tune, train, tune_runs, window_hypergrad
from bilevel.space import TrainingSpace

DT = torch.float64


def _fd_check(task, space, rule, steps=4, seed=0, rel=1e-6):
    data = examples_of(task)
    gen = task.generator(seed)
    params = [p.detach() for p in task.init(gen)]
    the_rule = zoo.rule(rule)
    states = init_states(the_rule, params)
    draws = [draw(data, space, 8, gen) for _ in range(steps)]
    val = data.batch("val", data.indices("val", 16, gen))
    g0 = torch.Generator().manual_seed(seed + 1)
    h = space.from_vector(space.to_vector(space.init(DT)) + 0.3 * torch.randn(space.size(), generator=g0, dtype=DT))
    grad, value, _, _ = window_hypergrad(task, space, the_rule, h, params, states, draws, val, 0)

    def f(vec):
        return float(window_hypergrad(task, space, the_rule, space.from_vector(vec), params, states,
                                      draws, val, 0)[1])

    x = space.to_vector(h)
    gvec = space.to_vector(grad)
    eps = 1e-5  # roundoff of f (~1e-16 |f| / eps) stays below the 1e-9 absolute tolerance
    for i in range(2):
        u = torch.randn(x.numel(), generator=g0, dtype=DT)
        fd = (f(x + eps * u) - f(x - eps * u)) / (2 * eps)
        assert float(gvec @ u) == pytest.approx(fd, rel=rel, abs=1e-9)
    return gvec


@pytest.mark.parametrize("rule", ["adam", "adamw"])
def test_mlp_schedule_decay_data_weights_and_noise_match_fd(rule):
    task = tasks.get("mlp_digits", width=8, depth=2, dtype=DT)
    params = task.init(task.generator(0))
    space = TrainingSpace.for_params(params, steps=4, lr_pieces=2, n_data=examples_of(task).n_train,
                                     noise=True, lr0=1e-2, wd0=1e-2)
    assert space.size() == 2 * 6 + 6 + 1437 + 1
    g = _fd_check(task, space, rule)
    grads = space.from_vector(g)
    assert float(grads["log_lr"][1].abs().sum()) > 0  # the second piece is used in steps 2-3
    assert float(grads["log_noise"].abs()) > 0


def test_per_weight_decay_matches_fd():
    task = tasks.get("mlp_digits", width=8, depth=1, dtype=DT)
    params = task.init(task.generator(0))
    space = TrainingSpace.for_params(params, steps=3, lr_pieces=0, elementwise_wd=True, wd0=0.1)
    assert space.size() == sum(p.numel() for p in params)
    _fd_check(task, space, "adamw", steps=3)


def test_charlm_per_tensor_schedule_matches_fd():
    task = tasks.get("charlm", width=8, depth=1, heads=2, context=8, batch_size=4, corpus_bytes=20_000,
                     dtype=DT)
    params = task.init(task.generator(0))
    space = TrainingSpace.for_params(params, steps=3, lr_pieces=3, lr0=1e-2)
    _fd_check(task, space, "adamw", steps=3)


def test_from_module_gru_task_matches_fd():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, 3, generator=g), torch.randint(0, 4, (64,), generator=g)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru, self.head = nn.GRU(3, 6, batch_first=True), nn.Linear(6, 4)

        def forward(self, seq):
            return self.head(self.gru(seq)[0][:, -1])

    task = tasks.from_module(Net, (x[:48], y[:48]), F.cross_entropy, batch_size=8, val_data=(x[48:], y[48:]),
                             dtype=DT)
    params = task.init(task.generator(0))
    space = TrainingSpace.for_params(params, steps=3, lr_pieces=1, n_data=48, noise=True, lr0=1e-2)
    _fd_check(task, space, "adam", steps=3)
    tuned = online_tune(task, space, seed=0, window=2, outer_lr=0.1)  # the whole tuner on a user's module
    assert len(tuned.params) == len(params) and torch.isfinite(space.to_vector(tuned.h)).all()
    assert not torch.equal(space.to_vector(tuned.h), space.to_vector(space.init(DT)))


def test_online_tuning_lowers_the_validation_loss_of_a_badly_set_run():
    """Start from lr 1e-4 (far too small for 60 steps): one tuned run ends lower than the run
    at the starting hyperparameters, trained on the same batches."""
    task = tasks.get("mlp_digits", width=16, depth=1)
    params = task.init(task.generator(0))
    space = TrainingSpace.for_params(params, steps=60, lr_pieces=2, lr0=1e-4)
    fixed = task.evaluate(train(task, space, space.init(), seed=0))["val_loss"]
    tuned = online_tune(task, space, seed=0, window=5, outer_lr=1.0)
    assert task.evaluate(tuned.params)["val_loss"] < 0.8 * fixed
    assert float(tuned.h["log_lr"].mean()) > float(space.init()["log_lr"].mean()) + 0.5


def test_tasks_without_indexable_data_are_a_one_line_error():
    with pytest.raises(ValueError, match="exposes no indexable data.*from_module") as e:
        examples_of(tasks.get("rosenbrock"))
    assert "\n" not in str(e.value)


def test_fill_ahead_carries_the_tuned_rate_into_later_pieces():
    task = tasks.get("mlp_digits", width=8, depth=1)
    params = task.init(task.generator(0))
    space = TrainingSpace.for_params(params, steps=12, lr_pieces=4, wd=False)
    seen = []
    online_tune(task, space, seed=0, window=3, outer_lr=0.5, callback=lambda step, h: seen.append((step, h)))
    for step, h in seen[:-1]:
        piece = space.piece(step - 1)
        assert torch.equal(h["log_lr"][piece + 1:], h["log_lr"][piece:piece + 1].expand(3 - piece, -1))
    first = []
    online_tune(task, space, seed=0, window=3, outer_lr=0.5, fill_ahead=False,
                callback=lambda step, h: first.append(h) if not first else None)
    assert torch.equal(first[0]["log_lr"][1:], space.init()["log_lr"][1:])  # untouched without it
    assert not torch.equal(first[0]["log_lr"][0], space.init()["log_lr"][0])


def test_tune_runs_restarts_from_the_best_run_and_backtracks():
    task = tasks.get("mlp_digits", width=8, depth=1)
    params = task.init(task.generator(0))
    space = TrainingSpace.for_params(params, steps=10, lr_pieces=2)
    records = tune_runs(task, space, budget_s=1e9, max_runs=3, window=5, outer_lr=0.5, seed=0)
    assert len(records) == 3 and [r.seconds for r in records] == sorted(r.seconds for r in records)
    lo, hi = space.bounds()["log_lr"]
    assert all(float(r.h["log_lr"].min()) >= lo and float(r.h["log_lr"].max()) <= hi for r in records)


def test_h_used_is_the_schedule_the_run_was_trained_under():
    """``h_used``: each ``log_lr`` row averaged over the windows of its piece, weight decay over
    every window, from the ``h`` each window trained with (the start, then each update)."""
    task = tasks.get("mlp_digits", width=8, depth=1)
    params = task.init(task.generator(0))
    space = TrainingSpace.for_params(params, steps=12, lr_pieces=2)
    seen = []
    res = online_tune(task, space, seed=0, window=3, outer_lr=0.5,
                      callback=lambda step, h: seen.append(h))
    used = [space.init()] + seen[:-1]  # window k trains under the h after update k - 1
    pieces = [space.piece(3 * k) for k in range(4)]
    for p in range(2):
        rows = [u["log_lr"][p] for u, q in zip(used, pieces) if q == p]
        torch.testing.assert_close(res.h_used["log_lr"][p], torch.stack(rows).mean(0))
    torch.testing.assert_close(res.h_used["log_wd"], torch.stack([u["log_wd"] for u in used]).mean(0))
    assert not torch.allclose(res.h_used["log_wd"], res.h["log_wd"])  # not where it ended


def test_tune_runs_starts_each_run_from_the_best_run_s_h_used(monkeypatch):
    import bilevel.online as online

    task = tasks.get("mlp_digits", width=8, depth=1)
    params = task.init(task.generator(0))
    space = TrainingSpace.for_params(params, steps=10, lr_pieces=2)
    starts, real = [], online.online_tune
    monkeypatch.setattr(online, "online_tune",
                        lambda task, space, h0, **kw: starts.append(h0) or real(task, space, h0, **kw))
    records = tune_runs(task, space, budget_s=1e9, max_runs=2, window=5, outer_lr=0.5, seed=0)
    assert starts[0] is None and starts[1] is records[0].h_used
