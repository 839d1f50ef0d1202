"""Meta-training: PES is unbiased, TBPTT matches finite differences, resume is exact, NaN
inner runs never reach theta."""
from __future__ import annotations

import logging
import math

import pytest
import torch

from learned import estimators
from learned.estimators import estimate
from learned.meta_train import meta_train
from learned.pool import InnerPool
from learned.mlp_lopt import MLPLOpt
from learned.sgdm_lopt import SGDMLOpt
from learned.task_family import SingleTask, TaskChoice, TaskFamily
from metaopt import tasks
from metaopt.tasks import ParamInfo, Task


def _theta64(lr=0.05, momentum=0.6):
    return {k: v.double() for k, v in SGDMLOpt(lr, momentum).init_theta().items()}


def reference_windows(task, theta, n_windows, truncation, batches):
    """A literal transcription of the inner loop (heavy ball on the quadratic, closed-form
    gradient h (x - x* - b)) and the mean-train-loss meta-loss of the last window."""
    lr, mu = theta["log_lr"].exp(), torch.sigmoid(theta["logit_momentum"])
    x = torch.zeros(task.dim, dtype=torch.float64)
    m = torch.zeros_like(x)
    it = iter(batches)
    for _ in range(n_windows):
        window = [next(it) for _ in range(truncation + 1)]
        after = []
        for k in range(truncation):
            g = task.h * (x - task.x_star - window[k])
            m = mu * m + g
            x = x - lr * m
            r = x - task.x_star - window[k + 1]
            after.append(0.5 * (task.h * r * r).sum())
    return torch.stack(after).mean()


def _pool(family, num_tasks, particles, truncation):
    return InnerPool(SGDMLOpt(), family, num_tasks, particles, seed=3, device=torch.device("cpu"),
                     truncation=truncation, meta_loss="mean_train_loss")


def test_tbptt_meta_gradient_matches_float64_finite_differences():
    task = tasks.get("quadratic", dim=4, cond=5.0, noise=0.3, dtype=torch.float64)
    family, truncation = SingleTask(task, horizon=100), 4
    pool = _pool(family, 1, 1, truncation)
    saved = pool.slots[0].batch_gen.get_state()
    theta = _theta64()
    estimate("tbptt", pool, theta, std=0.01, generator=torch.Generator())  # window 1
    est = estimate("tbptt", pool, theta, std=0.01, generator=torch.Generator())  # window 2
    gen = task.generator(0)
    gen.set_state(saved)
    batches = [task.sample_batch(gen) for _ in range(2 * (truncation + 1))]

    # window 2's TBPTT gradient: window 1 ran with theta but is detached, so perturb only the
    # theta used inside window 2 (reference: window 1 with fixed theta, window 2 with theta + h).
    def window2(th2):
        lr1, mu1 = theta["log_lr"].exp(), torch.sigmoid(theta["logit_momentum"])
        x = torch.zeros(task.dim, dtype=torch.float64)
        m = torch.zeros_like(x)
        for k in range(truncation):
            m = mu1 * m + task.h * (x - task.x_star - batches[k])
            x = x - lr1 * m
        return reference_windows_from(task, th2, x, m, batches[truncation + 1:], truncation)

    for key in theta:
        h = 1e-6
        up = {**theta, key: theta[key] + h}
        down = {**theta, key: theta[key] - h}
        fd = (window2(up) - window2(down)) / (2 * h)
        assert est.grad[key].item() == pytest.approx(fd.item(), rel=1e-6, abs=1e-9)


def reference_windows_from(task, theta, x, m, window, truncation):
    lr, mu = theta["log_lr"].exp(), torch.sigmoid(theta["logit_momentum"])
    after = []
    for k in range(truncation):
        m = mu * m + task.h * (x - task.x_star - window[k])
        x = x - lr * m
        r = x - task.x_star - window[k + 1]
        after.append(0.5 * (task.h * r * r).sum())
    return torch.stack(after).mean()


def test_pes_estimate_is_unbiased_for_the_full_unroll_gradient():
    """After two truncations, the mean PES estimate over many antithetic pairs equals the exact
    gradient of the second truncation's loss through both truncations (no truncation bias),
    within 5 standard errors; TBPTT's truncated gradient is measurably different."""
    task = tasks.get("quadratic", dim=3, cond=4.0, noise=0.0, dtype=torch.float64)
    truncation, n = 2, 2000
    theta, std, gen = _theta64(lr=0.3, momentum=0.5), 0.01, torch.Generator().manual_seed(0)
    pes = estimators.get("pes")(SGDMLOpt(), SingleTask(task, horizon=100), n, seed=3,
                                truncation=truncation, std=std)
    pes.estimate(theta, gen)
    est = pes.estimate(theta, gen)
    zeros = [torch.zeros(3, dtype=torch.float64)] * (2 * (truncation + 1))
    th = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    true = torch.autograd.grad(reference_windows(task, th, 2, truncation, zeros), list(th.values()))
    truncated = torch.autograd.grad(_second_window_only(task, theta, th, truncation), list(th.values()))
    for key, g, gt in zip(theta, true, truncated):
        samples = torch.stack([s[key] for s in est.slot_grads])
        se = samples.std() / math.sqrt(n)
        assert abs(samples.mean() - g) < 5 * se, (key, samples.mean().item(), g.item(), se.item())
        if key == "log_lr":  # the check has power: it tells PES from truncated BPTT
            assert abs(gt - g) > 10 * se, (gt.item(), g.item(), se.item())


def _second_window_only(task, theta, th, truncation):
    """Window 2's loss with window 1 run at a constant theta (what TBPTT differentiates)."""
    lr, mu = theta["log_lr"].exp(), torch.sigmoid(theta["logit_momentum"])
    x = torch.zeros(task.dim, dtype=torch.float64)
    m = torch.zeros_like(x)
    for _ in range(truncation):
        m = mu * m + task.h * (x - task.x_star)
        x = x - lr * m
    zeros = [torch.zeros(task.dim, dtype=torch.float64)] * (truncation + 1)
    return reference_windows_from(task, th, x, m, zeros, truncation)


class _Poisoned(Task):
    """A one-parameter task whose loss is NaN: inner runs on it must be skipped."""
    name = "poisoned"

    @property
    def param_info(self):
        return [ParamInfo("x", "vector", 1, 2)]

    def init(self, generator=None):
        return [torch.ones(2)]

    def loss(self, params, batch):
        return (params[0] ** 2).sum() * float("nan")

    def sample_batch(self, generator=None):
        return torch.zeros(2)


class _HalfPoisoned(TaskFamily):
    name, horizon, vmappable = "half_poisoned", 50, False

    def __init__(self):
        self.good = tasks.get("quadratic", dim=2, cond=2.0)
        self.bad = _Poisoned()

    def sample(self, generator):
        return self.bad if torch.rand((), generator=generator) < 0.5 else self.good


@pytest.mark.parametrize("method", ["pes", "es", "tbptt"])
def test_nan_inner_runs_are_logged_skipped_and_never_reach_theta(method, caplog):
    seen = []
    with caplog.at_level(logging.WARNING, logger="learned.meta_train"):
        theta = meta_train(SGDMLOpt(), _HalfPoisoned(), steps=4, method=method, truncation=3,
                           num_tasks=6, outer_lr=0.1, progress=False,
                           callback=lambda step, loss, bad: seen.append((loss, bad)))
    assert all(v.isfinite().all() for v in theta.values())
    assert any(bad for _, bad in seen) and "non-finite" in caplog.text
    assert all(math.isfinite(loss) for loss, bad in seen if len(bad) < 6)
    start = SGDMLOpt().init_theta()
    assert any(not torch.equal(theta[k], start[k]) for k in theta)  # good slots still trained


def test_all_bad_slots_leave_theta_unchanged():
    fam = SingleTask(_Poisoned(), horizon=10)
    start = SGDMLOpt().init_theta()
    theta = meta_train(SGDMLOpt(), fam, steps=3, truncation=2, num_tasks=2, progress=False)
    assert all(torch.equal(theta[k], start[k]) for k in theta)


@pytest.mark.parametrize("method,family", [
    ("pes", "single"), ("tbptt", "single"), ("es", "choice"), ("pes", "choice")])
def test_checkpoint_resume_is_exact(tmp_path, method, family):
    if family == "single":
        fam = SingleTask(tasks.get("quadratic", dim=4, cond=10.0, noise=0.5), horizon=6)
    else:
        fam = TaskChoice("quadratic", horizon=6, choices={"seed": [0, 1, 2]}, dim=4, noise=0.5)
    kw = dict(method=method, truncation=2, num_tasks=3, outer_lr=0.05, progress=False, seed=5)
    straight = meta_train(SGDMLOpt(), fam, steps=7, **kw)
    meta_train(SGDMLOpt(), fam, steps=4, checkpoint_dir=tmp_path, checkpoint_every=2, **kw)
    resumed = meta_train(SGDMLOpt(), fam, steps=7, checkpoint_dir=tmp_path, **kw)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000007.safetensors", "latest.json"]


def test_resume_with_other_settings_is_a_clear_error(tmp_path):
    fam = SingleTask(tasks.get("quadratic", dim=2), horizon=4)
    meta_train(SGDMLOpt(), fam, steps=2, truncation=2, num_tasks=1, checkpoint_dir=tmp_path,
               progress=False)
    with pytest.raises(ValueError, match="truncation=2.*3"):
        meta_train(SGDMLOpt(), fam, steps=3, truncation=3, num_tasks=1, checkpoint_dir=tmp_path,
                   progress=False)


@pytest.mark.parametrize("kw,match", [
    ({"method": "sgd"}, "allowed: pes, es, tbptt"), ({"truncation": 0}, "truncation"),
    ({"num_tasks": 2.5}, "num_tasks"), ({"std": -1.0}, "std"), ({"meta_loss": "acc"}, "meta_loss"),
    ({"theta": {"log_lr": torch.zeros(2)}}, "missing")])
def test_bad_arguments_are_one_line_errors(kw, match):
    fam = SingleTask(tasks.get("quadratic", dim=2), horizon=4)
    with pytest.raises(ValueError, match=match) as e:
        meta_train(SGDMLOpt(), fam, steps=1, progress=False, **kw)
    assert "\n" not in str(e.value)


def test_meta_training_improves_the_learning_rate_on_a_quadratic():
    """Starting from a too-small learning rate, every method raises it and lowers the loss."""
    fam = SingleTask(tasks.get("quadratic", dim=8, cond=10.0, noise=0.1), horizon=40)
    for method in ("pes", "es", "tbptt"):
        theta = meta_train(SGDMLOpt(lr=1e-3), fam, steps=40, method=method, truncation=5,
                           num_tasks=4, outer_lr=0.1, progress=False)
        assert theta["log_lr"].item() > math.log(1e-3) + 1.0, method


class _OneByOne(SingleTask):
    """The same family, but declared not vmappable: tasks run slot by slot."""
    vmappable = False


@pytest.mark.parametrize("method", ["pes", "tbptt"])
def test_vmapped_tasks_equal_tasks_run_one_by_one(method):
    task = tasks.get("quadratic", dim=5, cond=10.0, noise=0.5)
    kw = dict(method=method, truncation=3, num_tasks=3, outer_lr=0.05, progress=False, seed=1)
    together = meta_train(SGDMLOpt(), SingleTask(task, horizon=6), steps=4, **kw)
    apart = meta_train(SGDMLOpt(), _OneByOne(task, horizon=6), steps=4, **kw)
    for k in together:
        torch.testing.assert_close(together[k], apart[k], rtol=1e-5, atol=1e-6)
    assert not torch.equal(together["log_lr"], SGDMLOpt().init_theta()["log_lr"])


@pytest.mark.parametrize("meta_loss", ["mean_train_loss", "final_train_loss",
                                       "mean_log_train_loss"])
def test_truncation_meta_losses_match_their_definitions(meta_loss):
    """One truncation's meta-loss against a literal heavy-ball run: mean, last, or mean log of
    the losses after each update (the log weighs the small late losses as much as early ones)."""
    from learned.unroll import META_LOSSES

    assert meta_loss in META_LOSSES
    task = tasks.get("quadratic", dim=4, cond=5.0, noise=0.3, dtype=torch.float64)
    truncation, theta = 3, _theta64()
    pool = InnerPool(SGDMLOpt(), SingleTask(task, horizon=100), 1, 1, seed=3,
                     device=torch.device("cpu"), truncation=truncation, meta_loss=meta_loss)
    gen = task.generator(0)
    gen.set_state(pool.slots[0].batch_gen.get_state())
    window = [task.sample_batch(gen) for _ in range(truncation + 1)]
    lr, mu = theta["log_lr"].exp(), torch.sigmoid(theta["logit_momentum"])
    x, m, after = torch.zeros(task.dim, dtype=torch.float64), 0.0, []
    for k in range(truncation):
        m = mu * m + task.h * (x - task.x_star - window[k])
        x = x - lr * m
        r = x - task.x_star - window[k + 1]
        after.append(float(0.5 * (task.h * r * r).sum()))
    want = {"mean_train_loss": sum(after) / truncation, "final_train_loss": after[-1],
            "mean_log_train_loss": sum(math.log(v) for v in after) / truncation}[meta_loss]
    est = estimate("tbptt", pool, theta, std=0.01, generator=torch.Generator())
    assert est.meta_loss == pytest.approx(want, rel=1e-12)


def test_ctrl_c_at_step_3_saves_a_checkpoint_that_resumes_exactly(tmp_path, capsys):
    """SIGINT during outer step 3 of steps=100: the step finishes, a checkpoint for step 3 is
    written (the interval is 50), KeyboardInterrupt is raised, and resuming equals a straight
    run."""
    import os
    import signal

    fam = SingleTask(tasks.get("quadratic", dim=4, cond=10.0, noise=0.5), horizon=6)
    kw = dict(truncation=2, num_tasks=2, outer_lr=0.05, progress=False, seed=2)

    def ctrl_c(step, loss, bad):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt, match="meta-train"):
        meta_train(SGDMLOpt(), fam, steps=100, checkpoint_dir=tmp_path, callback=ctrl_c, **kw)
    assert "meta-train: interrupted" in capsys.readouterr().err
    import json

    assert json.loads((tmp_path / "latest.json").read_text())["outer_step"] == 3
    resumed = meta_train(SGDMLOpt(), fam, steps=5, checkpoint_dir=tmp_path, **kw)
    straight = meta_train(SGDMLOpt(), fam, steps=5, **kw)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_checkpoint_is_written_every_checkpoint_seconds(tmp_path, monkeypatch):
    import json
    import sys

    mt = sys.modules["learned.meta_train"]
    clock = iter(range(0, 10_000, 7))
    monkeypatch.setattr(mt.time, "monotonic", lambda: float(next(clock)))
    seen = []
    fam = SingleTask(tasks.get("quadratic", dim=2), horizon=4)
    meta_train(SGDMLOpt(), fam, steps=4, truncation=2, num_tasks=1, progress=False,
               checkpoint_dir=tmp_path, checkpoint_seconds=10.0,
               callback=lambda step, *_: seen.append(
                   json.loads((tmp_path / "latest.json").read_text())["outer_step"]
                   if (tmp_path / "latest.json").exists() else 0))
    # the clock advances 7 s per reading: a save every second step, not only at the end
    assert seen == [0, 0, 2, 2]


def test_progress_shows_the_expected_time_left(capsys):
    import re

    fam = SingleTask(tasks.get("quadratic", dim=2), horizon=4)
    meta_train(SGDMLOpt(), fam, steps=3, truncation=2, num_tasks=1, progress=True)
    assert re.search(r"3/3 \[\d\d:\d\d<\d\d:\d\d", capsys.readouterr().err)


def test_an_estimator_added_as_one_file_is_found_by_name(monkeypatch):
    """A module dropped into learned/estimators registers itself; meta_train(method=...) and
    the CLI's --method list accept it without touching any other file."""
    import importlib
    import sys

    import learned.estimators as pkg

    text = (
        "from . import register\n"
        "from .es import ES\n\n\n"
        "@register\n"
        "class MirrorES(ES):\n"
        "    name = 'mirror_es'\n")
    path = pkg.__path__[0] + "/mirror_es.py"
    with open(path, "w") as f:
        f.write(text)
    try:
        for name in [m for m in sys.modules if m.startswith("learned.estimators")]:
            del sys.modules[name]
        fresh = importlib.import_module("learned.estimators")
        assert "mirror_es" in fresh.METHODS
        fam = SingleTask(tasks.get("quadratic", dim=2), horizon=4)
        kw = dict(truncation=2, num_tasks=2, progress=False)
        monkeypatch.setattr(sys.modules["learned.meta_train"], "estimators", fresh)
        a = meta_train(SGDMLOpt(), fam, steps=2, method="mirror_es", **kw)
        b = meta_train(SGDMLOpt(), fam, steps=2, method="es", **kw)
        assert all(torch.equal(a[k], b[k]) for k in a)
    finally:
        import os

        os.remove(path)
        for name in [m for m in sys.modules if m.startswith("learned.estimators")]:
            del sys.modules[name]
        importlib.import_module("learned.estimators")


def test_resume_is_exact_when_theta_keys_are_not_sorted(tmp_path):
    """A checkpoint stores theta's entries by name; restored, they must line up with the outer
    Adam states again (kept in theta's own key order), also when that order is not sorted, as
    for ``adam_like_theta`` and the pretrained μLO's meta-training (a resumed run once crashed
    on mismatched shapes)."""
    fam = SingleTask(tasks.get("quadratic", dim=4, cond=10.0, noise=0.5), horizon=6)
    lopt = MLPLOpt(hidden=4, layers=1)
    start = lopt.init_theta(torch.Generator().manual_seed(0))
    unsorted = dict(reversed(list(start.items())))
    assert list(unsorted) != sorted(unsorted)
    kw = dict(method="pes", truncation=2, num_tasks=2, outer_lr=0.05, progress=False, seed=5,
              theta=unsorted)
    straight = meta_train(lopt, fam, steps=5, **kw)
    meta_train(lopt, fam, steps=2, checkpoint_dir=tmp_path, checkpoint_every=2, **kw)
    resumed = meta_train(lopt, fam, steps=5, checkpoint_dir=tmp_path, **kw)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
