"""One benchmark run: train a task's parameters with an update rule and record its curve.

The rule runs through :class:`metaopt.RuleOptimizer`. Gradients are computed before ``step``
and the loss is handed over through the closure, so rules that need the loss or
Hessian-vector products (``rule.caps.needs``) work unchanged: when a step needs ``"hvp"`` the
backward pass runs with ``create_graph=True``.

The record (a JSON-able dict) holds the training loss of every step, the validation metrics
(``task.evaluate``) at step 0, every ``eval_every`` steps and at the last step, and the
cumulative wall time of the training steps (forward, backward, update) at each evaluation
(evaluation time excluded).
A non-finite training loss, or a linear-algebra failure inside the step (an eigendecomposition
of statistics that already went non-finite), ends the run early with ``diverged: true``.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch

from ..optimizer import RuleOptimizer
from ..rule import UpdateRule
from ..tasks import Task


def finite_or_none(x: float) -> float | None:
    """``x`` when finite, else ``None`` (JSON has no inf/nan)."""
    return x if math.isfinite(x) else None


def jsonable(value: Any) -> Any:
    """A hyperparameter value as JSON: numbers, bools, strings, None, lists, dicts (string
    keys); a torch dtype as its name (``float64``); else its repr."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return jsonable(value.item())
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    return repr(value)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _evaluate(task: Task, params: list[torch.Tensor], step: int, elapsed: float) -> dict:
    metrics = task.evaluate([p.detach() for p in params])
    metrics = {k: finite_or_none(float(v)) for k, v in metrics.items()}
    return {"step": step, "time_s": elapsed, **metrics}


def _step(opt: RuleOptimizer, rule: UpdateRule, task: Task, params: list, batch,
          hvp: bool):
    """One optimizer step on ``batch``; returns the loss. Gradients are computed before the
    step (the closure only hands the loss over), except for rules with ``predict``, whose
    closure must compute them at the predicted weights."""
    def closure():
        opt.zero_grad(set_to_none=True)
        loss = task.loss(params, batch)
        loss.backward(create_graph=hvp)
        return loss

    if rule.caps.predict is not None:
        return opt.step(closure)
    loss = closure()
    opt.step(lambda: loss)
    return loss


def train_curve(task: Task, rule: UpdateRule, seed: int, steps: int, eval_every: int,
                impl: str = "auto") -> dict:
    """Train ``task`` from its seeded initialisation for ``steps`` steps of ``rule``.

    ``seed`` seeds one generator that draws the initial parameters and then the batches, so a
    run is reproducible. ``impl`` is :class:`RuleOptimizer`'s implementation path (a compiled
    path's compilation counts in the first step's time). Returns the run's record (see the
    module docstring).
    """
    if steps < 1 or eval_every < 1:
        raise ValueError(f"steps and eval_every must be >= 1, got {steps} and {eval_every}")
    gen = task.generator(seed)
    params = [p.detach().clone().requires_grad_(True) for p in task.init(gen)]
    opt = RuleOptimizer(params, rule, impl=impl)
    batches = task.batches(gen)
    train_loss: list[float | None] = []
    evals = [_evaluate(task, params, 0, 0.0)]
    elapsed, diverged = 0.0, False
    for t in range(1, steps + 1):
        batch = next(batches)
        hvp = "hvp" in rule.caps.needs(rule.hp, t)
        start = time.perf_counter()
        try:
            loss_t = _step(opt, rule, task, params, batch, hvp)
        except torch.linalg.LinAlgError:  # a factorisation of non-finite statistics: diverged
            train_loss.append(None)
            diverged = True
            break
        loss = float(loss_t.detach())  # float() waits for the device
        _sync(task.device)
        elapsed += time.perf_counter() - start
        train_loss.append(finite_or_none(loss))
        if not math.isfinite(loss):
            diverged = True
            break
        if t % eval_every == 0 or t == steps:
            evals.append(_evaluate(task, params, t, elapsed))
    opt.zero_grad(set_to_none=True)  # break the param <-> grad cycle create_graph leaves
    return {
        "lr": jsonable(rule.hp.get("lr")),
        "hp": {k: jsonable(v) for k, v in rule.hp.items()},
        "impl": impl,
        "steps": steps,
        "eval_every": eval_every,
        "train_loss": train_loss,
        "evals": evals,
        "diverged": diverged,
        "time_s": elapsed,
    }


def final_val_loss(record: dict) -> float:
    """The run's last validation loss; ``inf`` if it diverged or the loss is not finite."""
    if record["diverged"]:
        return math.inf
    v = record["evals"][-1].get("val_loss")
    return math.inf if v is None else float(v)
