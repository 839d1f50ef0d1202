"""One benchmark run against closed forms on the quadratic task."""
import math

import pytest
import torch

from metaopt import Capabilities, UpdateRule, tasks, zoo
from metaopt.bench.run import final_val_loss, train_curve


def _gd_val_loss(task, lr, t):
    """Gradient descent from 0 on 1/2 sum h (x - x*)^2: x_t - x* = (1 - lr h)^t (0 - x*)."""
    h, xs = task.h.double(), task.x_star.double()
    return float(0.5 * (h * ((1 - lr * h) ** t * xs) ** 2).sum())


def test_sgd_curve_matches_closed_form_gradient_descent():
    task = tasks.get("quadratic", dim=16, cond=10.0)
    lr = 0.5
    rec = train_curve(task, zoo.rule("sgd", lr=lr), seed=3, steps=10, eval_every=4)
    assert [e["step"] for e in rec["evals"]] == [0, 4, 8, 10]
    for e in rec["evals"]:
        assert e["val_loss"] == pytest.approx(_gd_val_loss(task, lr, e["step"]), rel=1e-5)
    # train loss of step t is measured before update t, i.e. at x_{t-1}
    expected = [_gd_val_loss(task, lr, t) for t in range(10)]
    assert rec["train_loss"] == pytest.approx(expected, rel=1e-5)
    times = [e["time_s"] for e in rec["evals"]]
    assert times == sorted(times) and rec["time_s"] == times[-1]
    assert rec["lr"] == lr and rec["hp"]["momentum"] == 0 and not rec["diverged"]
    assert final_val_loss(rec) == rec["evals"][-1]["val_loss"]


def test_divergence_stops_the_run_and_counts_as_inf():
    task = tasks.get("quadratic", dim=16, cond=10.0)
    rec = train_curve(task, zoo.rule("sgd", lr=1e3), seed=0, steps=200, eval_every=5)
    assert rec["diverged"] and rec["train_loss"][-1] is None
    assert len(rec["train_loss"]) < 200
    assert final_val_loss(rec) == math.inf


def _hvp_rule():
    """delta = lr * u * (H u): with u in {-1, 1}^n this is lr * diag(H) for a diagonal H."""

    def update(g, p, s, hp, step, hvp, u):
        return hp["lr"] * u * hvp, s

    return UpdateRule("hvp_probe", lambda p: {}, update, hp={"lr": 0.1},
                      caps=Capabilities(needs=lambda hp, step: frozenset({"hvp"})))


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_rules_that_need_hessian_vector_products_get_them():
    task = tasks.get("quadratic", dim=8, cond=4.0)
    rec = train_curve(task, _hvp_rule(), seed=0, steps=3, eval_every=1)
    h, xs = task.h.double(), task.x_star.double()
    for e in rec["evals"]:
        x = -0.1 * e["step"] * h
        assert e["val_loss"] == pytest.approx(float(0.5 * (h * (x - xs) ** 2).sum()), rel=1e-5)


def test_seeded_runs_repeat_and_seeds_differ():
    task = tasks.get("quadratic", dim=8, noise=0.5)
    a, b, c = (train_curve(task, zoo.rule("adamw", lr=0.05), s, 20, 5) for s in (1, 1, 2))
    assert a["train_loss"] == b["train_loss"] and a["train_loss"] != c["train_loss"]


@pytest.mark.parametrize("steps,every", [(0, 1), (5, 0)])
def test_bad_lengths_are_rejected(steps, every):
    with pytest.raises(ValueError, match="must be >= 1"):
        train_curve(tasks.get("quadratic"), zoo.rule("sgd"), 0, steps, every)


def test_validation_metrics_include_accuracy_on_a_classification_task():
    if "mlp_digits" not in tasks.names():
        pytest.skip("mlp_digits not present")
    task = tasks.get("mlp_digits", width=16)
    rec = train_curve(task, zoo.rule("adamw", lr=1e-2), seed=0, steps=30, eval_every=30)
    first, last = rec["evals"][0], rec["evals"][-1]
    assert 0.0 <= last["accuracy"] <= 1.0
    assert last["val_loss"] < first["val_loss"] and last["accuracy"] > first["accuracy"]
    assert torch.is_tensor(task.init()[0])


def test_linalg_failure_in_a_step_counts_as_divergence():
    """A second-order rule whose statistics went non-finite fails inside eigh; the run is
    recorded as diverged (inf for tuning), not a crash of the whole benchmark."""
    from metaopt import tasks, zoo
    from metaopt.bench.run import final_val_loss

    task = tasks.get("quadratic", dim=8)
    rec = train_curve(task, zoo.rule("shampoo", lr=1e12), seed=0, steps=20, eval_every=5)
    assert rec["diverged"]
    assert final_val_loss(rec) == float("inf")


def test_weight_prediction_rules_get_gradients_at_the_predicted_point():
    """xgrad_adam with s = 0 is adam; with s = 1 the closure's gradients (taken at the
    predicted weights) change the curve, which a gradient computed before the step would not."""
    task = tasks.get("quadratic", dim=8, cond=10.0)
    curve = lambda rule: train_curve(task, rule, seed=0, steps=6, eval_every=3)["train_loss"]
    adam = curve(zoo.rule("adam", lr=0.1))
    assert curve(zoo.rule("xgrad_adam", lr=0.1, s=0.0)) == adam
    predicted = curve(zoo.rule("xgrad_adam", lr=0.1, s=1.0))
    assert predicted[0] == adam[0] and predicted[2:] != adam[2:]
