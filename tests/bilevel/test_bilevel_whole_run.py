"""Whole-run hypergradients (bilevel.whole_run) against float64 central finite differences of
the trained model's validation loss, and the tuner's descent, determinism and backtracking."""
import math

import pytest
import torch

from metaopt import tasks
from bilevel.examples import examples_of
from bilevel.online import train
from bilevel.space import TrainingSpace
from bilevel.whole_run import tune_whole_runs, whole_run_hypergrad

DT = torch.float64


def _val_loss_after_training(task, space, h, seed, rule):
    """F(h) computed independently: bilevel.online.train (no graph) and the task's loss on the
    whole validation split."""
    data = examples_of(task)
    trained = train(task, space, h, seed=seed, rule=rule)
    return float(task.loss(trained, data.batch("val", torch.arange(data.n_val))))


@pytest.mark.parametrize("rule", ["adam", "adamw"])
def test_whole_run_hypergrad_matches_fd_of_the_trained_model_s_validation_loss(rule):
    task = tasks.get("mlp_digits", width=8, depth=2, batch_size=8, dtype=DT)
    params = task.init(task.generator(0))
    space = TrainingSpace.for_params(params, steps=6, lr_pieces=3, lr0=1e-2, wd0=1e-2)
    gen = torch.Generator().manual_seed(1)
    x = space.to_vector(space.init(DT)) + 0.3 * torch.randn(space.size(), generator=gen, dtype=DT)
    g, value, _ = whole_run_hypergrad(task, space, space.from_vector(x), rule=rule, seed=0)
    assert float(value) == pytest.approx(
        _val_loss_after_training(task, space, space.from_vector(x), 0, rule), rel=1e-12)
    gvec = space.to_vector(g)
    assert float(space.from_vector(gvec)["log_lr"][2].abs().sum()) > 0  # the last piece acts
    eps = 1e-5
    for _ in range(2):
        u = torch.randn(x.numel(), generator=gen, dtype=DT)
        fd = (float(whole_run_hypergrad(task, space, space.from_vector(x + eps * u), rule=rule)[1])
              - float(whole_run_hypergrad(task, space, space.from_vector(x - eps * u), rule=rule)[1])) / (2 * eps)
        assert float(gvec @ u) == pytest.approx(fd, rel=1e-6, abs=1e-10)


def test_tuning_lowers_the_validation_loss_and_is_deterministic():
    """From lr 1e-4 (far too small for 40 steps), 6 whole-run steps end well below the start;
    the records are the same in a second call (same seed: same init and batches)."""
    task = tasks.get("mlp_digits", width=16, depth=1)
    params = task.init(task.generator(0))
    space = TrainingSpace.for_params(params, steps=40, lr_pieces=2, lr0=1e-4)
    a = tune_whole_runs(task, space, budget_s=1e9, max_runs=6, outer_lr=0.5, seed=0)
    b = tune_whole_runs(task, space, budget_s=1e9, max_runs=6, outer_lr=0.5, seed=0)
    assert [r.val_loss for r in a] == [r.val_loss for r in b]
    start = task.evaluate(train(task, space, space.init(), seed=0))["val_loss"]
    assert a[0].val_loss == pytest.approx(start, rel=1e-5)  # the first run is the start point
    assert min(r.val_loss for r in a) < 0.8 * start
    lo, hi = space.bounds()["log_lr"]
    assert all(lo - 1e-5 <= float(r.h["log_lr"].min()) and float(r.h["log_lr"].max()) <= hi + 1e-5
               for r in a)  # float32 h


def test_a_run_that_does_not_improve_sends_the_next_one_back_to_the_best_h(monkeypatch):
    """Objective values 1, 2, 0.5 with a constant gradient: the first Adam step moves h by
    -lr per coordinate; the second run is worse, so the third starts from the first h with a
    step of lr / 2 (Adam's second step along the same gradient is again its full lr)."""
    import bilevel.whole_run as wr

    task = tasks.get("mlp_digits", width=8, depth=1)
    params = task.init(task.generator(0))
    space = TrainingSpace.for_params(params, steps=2, lr_pieces=1, lr0=1e-2)
    values = iter([1.0, 2.0, 0.5])

    def fake(task_, space_, h, **kw):
        return {k: torch.ones_like(v) for k, v in h.items()}, torch.tensor(next(values)), params

    monkeypatch.setattr(wr, "whole_run_hypergrad", fake)
    r = tune_whole_runs(task, space, budget_s=1e9, max_runs=3, outer_lr=0.1, seed=0)
    first, second, third = (space.to_vector(x.h) for x in r)
    assert torch.allclose(second - first, torch.full_like(first, -0.1), atol=1e-5)
    assert torch.allclose(third - first, torch.full_like(first, -0.05), atol=1e-5)


def test_bad_outer_lr_is_a_one_line_error():
    task = tasks.get("mlp_digits", width=8, depth=1)
    space = TrainingSpace.for_params(task.init(task.generator(0)), steps=2, lr_pieces=1)
    with pytest.raises(ValueError, match="outer_lr=0"):
        tune_whole_runs(task, space, budget_s=1.0, outer_lr=0)
    assert math.isfinite(tune_whole_runs(task, space, budget_s=0.0, outer_lr=0.1)[0].val_loss)


def test_a_first_run_that_diverges_is_a_one_line_error(monkeypatch):
    import bilevel.whole_run as wr

    task = tasks.get("mlp_digits", width=8, depth=1)
    params = task.init(task.generator(0))
    space = TrainingSpace.for_params(params, steps=2, lr_pieces=1)
    monkeypatch.setattr(wr, "whole_run_hypergrad", lambda t, s, h, **kw: (
        {k: torch.full_like(v, float("nan")) for k, v in h.items()}, torch.tensor(float("nan")), params))
    with pytest.raises(ValueError, match="first run .* diverged"):
        tune_whole_runs(task, space, budget_s=1e9, max_runs=3, outer_lr=0.1)
