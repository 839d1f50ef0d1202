"""Hypergradient descent over whole training runs (reverse mode through every step).

Each outer step trains a fresh model for all ``space.steps`` steps under ``h``, from the same
initialisation and in the same batch order every time (so the objective is a deterministic
function of ``h``, as a black-box trial's is), and differentiates the validation loss of the
trained model on the whole validation split through every step:

    F(h) = f(theta_T(h); V),   theta_{t+1} = theta_t - delta_rule(grad g(theta_t, h; B_t), hp(h, t))
    h <- h - AdamStep(dF/dh)

This is reverse-mode differentiation of the whole trajectory (Maclaurin, Duvenaud & Adams,
"Gradient-based Hyperparameter Optimization through Reversible Learning", ICML 2015; Franceschi
et al., "Forward and Reverse Gradient-Based Hyperparameter Optimization", ICML 2017, RMD),
without the reversible-learning memory trick: every step's activations are kept, so memory grows
with ``space.steps`` and one outer step costs about three plain runs. Unlike the truncated online
tuner (:mod:`bilevel.online`), the gradient is exactly that of the quantity the tuner is judged
on, with no short-horizon bias.

The outer loop is Adam on ``h`` (projected onto the space's box), keeping the best run; a run
that does not improve on the best halves the step and the next step starts again from the best
``h`` (backtracking, as :func:`bilevel.online.tune_runs` does).
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch
from torch import Tensor

from metaopt import zoo
from metaopt.rule import UpdateRule

from .examples import Examples, examples_of
from .online import TuneRecord, _AdamTree, draw, fresh_run, window_hypergrad
from .space import TrainingSpace


def whole_run_hypergrad(task, space: TrainingSpace, h: dict, *, rule: str | UpdateRule = "adamw",
                        seed: int = 0, batch_size: int | None = None,
                        data: Examples | None = None) -> tuple[dict, Tensor, list[Tensor]]:
    """``(dF/dh, F, trained params)``: a fresh model (init and batch order from ``seed``) trained
    for ``space.steps`` steps under ``h``, ``F`` its loss on the whole validation split,
    differentiated through every step."""
    the_rule, data, gen, params, states = fresh_run(task, rule, seed, data)
    size = batch_size or task.batch_size
    draws = [draw(data, space, size, gen) for _ in range(space.steps)]
    val_idx = torch.arange(data.n_val, device=data.val[0].device)
    g, value, trained, _ = window_hypergrad(task, space, the_rule, h, params, states, draws,
                                            data.batch("val", val_idx), 0)
    return g, value.detach(), trained


def tune_whole_runs(task, space: TrainingSpace, *, budget_s: float, outer_lr: float = 0.3,
                    h0: dict | None = None, max_runs: int | None = None, seed: int = 0,
                    rule: str | UpdateRule = "adamw", batch_size: int | None = None,
                    on_run: Callable[[TuneRecord], Any] | None = None) -> list[TuneRecord]:
    """Whole-run hypergradient descent within ``budget_s`` seconds (at least one run; at most
    ``max_runs``). One :class:`~bilevel.online.TuneRecord` per run: seconds since the start,
    the validation loss of the model that run trained (``task.evaluate``, as a black-box trial
    is scored), the ``h`` it was trained under (also its ``h_used``). A first run that
    diverges is a one-line ``ValueError``; a later one counts as not improving."""
    if outer_lr <= 0:
        raise ValueError(f"outer_lr={outer_lr}; it must be > 0")
    the_rule = zoo.rule(rule) if isinstance(rule, str) else rule
    data = examples_of(task)
    if h0 is None:
        p0 = task.init(task.generator(seed))[0]
        h0 = space.init(p0.dtype, p0.device)
    h = h0
    outer = _AdamTree(outer_lr)
    records: list[TuneRecord] = []
    best: tuple[float, dict, dict] | None = None  # (objective, h, its gradient)
    lr, start = outer_lr, time.perf_counter()
    while not records or (time.perf_counter() - start < budget_s and len(records) < (max_runs or 10**9)):
        g, value, trained = whole_run_hypergrad(task, space, h, rule=the_rule, seed=seed,
                                                batch_size=batch_size, data=data)
        objective = float(value) if math.isfinite(float(value)) else math.inf
        val_loss = task.evaluate(trained)["val_loss"]
        records.append(TuneRecord(time.perf_counter() - start,
                                  val_loss if val_loss == val_loss else math.inf, h, h))
        if on_run is not None:
            on_run(records[-1])
        if best is None and objective == math.inf:
            raise ValueError(f"the first run (at h0) diverged: validation loss {float(value)}; "
                             "start from smaller learning rates")
        if best is None or objective < best[0]:
            best = (objective, h, g)
        else:  # backtrack: a smaller step from the best point, along its gradient
            lr *= 0.5
            outer.set_lr(lr)
        h = space.clip(outer.step(best[1], best[2]))  # from the best h (this one if it improved)
    return records
