"""Hypergradient descent during one training run (truncated online unrolling).

The run trains ``theta`` with a zoo rule whose hyperparameters come from ``h`` (a
:class:`~bilevel.space.TrainingSpace`). Every ``window`` steps it differentiates the
validation loss on a fresh validation minibatch after the window with respect to ``h``,
through the window's steps only (parameters and rule state at the window's start are constants):

    theta_{t+1} = theta_t - delta_rule(grad_theta g(theta_t, h; B_t), hp(h, t))   t = s..s+W-1
    h <- h - AdamStep( d f(theta_{s+W}; V_s) / d h )

and carries on training from ``theta_{s+W}`` (no retraining). This is the truncated-
backpropagation estimator of Shaban et al., "Truncated Back-propagation for Bilevel
Optimization" (AISTATS 2019), used online as in Franceschi et al. (ICML 2017, RTHO) and, for a
window of one step, Baydin et al. (ICLR 2018). Memory grows with ``window``, not with the run;
one window costs about three times its plain training (forward, reverse, validation).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from metaopt import zoo
from metaopt.rule import UpdateRule, apply, init_states

from .examples import Examples, examples_of
from .space import TrainingSpace


def training_loss(task, space: TrainingSpace, h: dict, params: list[Tensor], batch: tuple,
                  idx: Tensor, noise: Tensor | None) -> Tensor:
    """The task's loss on ``batch`` with the tuned example weights and input noise of ``h``.
    ``noise`` is the standard-normal draw for the first (input) tensor, or None."""
    std = space.noise_std(h)
    if std is not None and noise is not None:
        batch = (batch[0] + std * noise,) + tuple(batch[1:])
    weights = space.example_weights(h, idx)
    if weights is None:
        return task.loss(params, batch)
    per_example = torch.func.vmap(lambda *ex: task.loss(params, tuple(e[None] for e in ex)))(*batch)
    return (weights * per_example).mean()


@dataclass(frozen=True)
class Draw:
    """One step's training minibatch: indices, tensors and the input-noise draw (or None)."""

    idx: Tensor
    batch: tuple
    noise: Tensor | None


def draw(data: Examples, space: TrainingSpace, size: int, gen: torch.Generator) -> Draw:
    idx = data.indices("train", size, gen)
    batch = data.batch("train", idx)
    noise = None
    if space.noise:
        x = batch[0]
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=gen.device).to(x.device)
    return Draw(idx, batch, noise)


def window_steps(task, space: TrainingSpace, rule: UpdateRule, h: dict, params: list[Tensor],
                 states: list, draws: list[Draw], first_step: int) -> tuple[list[Tensor], list]:
    """``len(draws)`` steps of ``rule`` from ``(params, states)``, differentiable in ``h``;
    ``first_step`` is the 0-based index of the first step in the run (for the schedule)."""
    grad = torch.func.grad(lambda ps, d: training_loss(task, space, h, list(ps), d.batch, d.idx, d.noise))
    for k, d in enumerate(draws):
        t = first_step + k
        grads = grad(tuple(params), d)
        params, states = apply(rule, params, list(grads), states, t + 1, space.rule_hp(h, t))
    return params, states


def window_hypergrad(task, space: TrainingSpace, rule: UpdateRule, h: dict, params: list[Tensor],
                     states: list, draws: list[Draw], val_batch: tuple, first_step: int):
    """``(d f / d h, f, params_after, states_after)`` with ``f`` the task loss on ``val_batch``
    after the window's steps (the truncated hypergradient; the start is held fixed)."""
    start_p = [p.detach() for p in params]
    start_s = [{k: v.detach() for k, v in s.items()} for s in states]

    def objective(x):
        ps, ss = window_steps(task, space, rule, x, start_p, start_s, draws, first_step)
        return task.loss(ps, val_batch), (ps, ss)

    g, (value, (ps, ss)) = torch.func.grad_and_value(objective, has_aux=True)(h)
    return g, value, [p.detach() for p in ps], [{k: v.detach() for k, v in s.items()} for s in ss]


def fresh_run(task, rule: str | UpdateRule, seed: int, data: Examples | None = None):
    """``(rule, data, generator, params, states)`` of a fresh run: the zoo rule (by name or
    given), the task's data, a generator seeded by ``seed`` that drew the initial ``params``
    (and then draws the run's batches), and the rule's initial states."""
    the_rule = zoo.rule(rule) if isinstance(rule, str) else rule
    data = data or examples_of(task)
    gen = task.generator(seed)
    params = [p.detach() for p in task.init(gen)]
    return the_rule, data, gen, params, init_states(the_rule, params)


def train(task, space: TrainingSpace, h: dict, *, rule: str | UpdateRule = "adamw", seed: int = 0,
          batch_size: int | None = None, data: Examples | None = None) -> list[Tensor]:
    """Train a fresh model (init seeded by ``seed``) for ``space.steps`` steps at fixed ``h``."""
    the_rule, data, gen, params, states = fresh_run(task, rule, seed, data)
    size = batch_size or task.batch_size
    h = {k: ([t.detach() for t in v] if isinstance(v, list) else v.detach()) for k, v in h.items()}
    grad = torch.func.grad(lambda ps, d: training_loss(task, space, h, list(ps), d.batch, d.idx, d.noise))
    with torch.no_grad():
        for t in range(space.steps):
            d = draw(data, space, size, gen)
            params, states = apply(the_rule, params, list(grad(tuple(params), d)), states, t + 1,
                                   space.rule_hp(h, t))
    return params


@dataclass
class OnlineResult:
    """The tuned ``h`` (where the run ended), ``h_used`` (what the run was trained under: see
    :func:`online_tune`), the trained parameters, and per-window (seconds, validation
    minibatch loss) of the run."""

    h: dict
    params: list[Tensor]
    seconds: list[float] = field(default_factory=list)
    window_losses: list[float] = field(default_factory=list)
    h_used: dict | None = None


def _acting(space: TrainingSpace, h: dict, piece: int) -> Tensor:
    """Per element of ``space.to_vector(h)``: 1 where it acts during schedule ``piece`` (the
    piece's own row of ``log_lr``; every other hyperparameter acts at every step), else 0."""
    w = torch.ones_like(space.to_vector(h))
    if "log_lr" in h:
        n, rows = h["log_lr"].numel(), h["log_lr"].shape[0]
        w[:n] = (torch.arange(n, device=w.device) // (n // rows) == piece).to(w.dtype)
    return w


def online_tune(task, space: TrainingSpace, h0: dict | None = None, *, rule: str | UpdateRule = "adamw",
                window: int = 10, outer_lr: float = 0.05, val_batch_size: int = 256, seed: int = 0,
                batch_size: int | None = None, data: Examples | None = None, fill_ahead: bool | None = None,
                callback: Callable[[int, dict], Any] | None = None) -> OnlineResult:
    """One training run of ``space.steps`` steps that tunes ``h`` by truncated hypergradients
    every ``window`` steps (Adam with ``outer_lr`` on ``h``, projected onto the space's box).
    Returns the trained model, which is the product: it was trained under the hyperparameters
    as they were being tuned. ``fill_ahead`` (default: when starting from the space's initial
    point, ``h0=None``) copies the current piece's learning rates into the pieces not reached
    yet after each update, so a first run follows its tuned rates forward as hypergradient
    descent does (Baydin et al. 2018) instead of falling back to the start value at each piece.

    ``h_used`` is the hyperparameters the run was trained under, averaged over its windows
    (weighted by their steps): each ``log_lr`` row over the windows that start in its piece
    (a row no window starts in keeps its final value), everything
    else over the whole run. A fresh run at ``h_used`` replays the tuned run's schedule; one at
    the final ``h`` does not (its weight decay, for one, is where greedy truncated
    hypergradients pushed it by the end, applied from step 0)."""
    if window < 1:
        raise ValueError(f"window={window}; it must be >= 1")
    the_rule, data, gen, params, states = fresh_run(task, rule, seed, data)
    fill = (h0 is None) if fill_ahead is None else fill_ahead
    h = h0 if h0 is not None else space.init(params[0].dtype, params[0].device)
    size = batch_size or task.batch_size
    outer = _AdamTree(outer_lr)
    result, start = OnlineResult(h, params), time.perf_counter()
    used_sum = used_weight = 0.0
    for s in range(0, space.steps, window):
        draws = [draw(data, space, size, gen) for _ in range(min(window, space.steps - s))]
        val = data.batch("val", data.indices("val", val_batch_size, gen))
        acting = _acting(space, h, space.piece(s)) * len(draws)
        used_sum, used_weight = used_sum + acting * space.to_vector(h).detach(), used_weight + acting
        g, value, params, states = window_hypergrad(task, space, the_rule, h, params, states, draws, val, s)
        h = space.clip(outer.step(h, g))
        if fill and "log_lr" in h:
            h = dict(h, log_lr=_fill_ahead(h["log_lr"], space.piece(s + len(draws) - 1)))
        result.seconds.append(time.perf_counter() - start)
        result.window_losses.append(float(value))
        if callback is not None:
            callback(s + len(draws), h)
    result.h, result.params = h, params
    final = space.to_vector(h).detach()  # a row whose piece began no window: its final value
    result.h_used = space.from_vector(torch.where(used_weight > 0,
                                                  used_sum / used_weight.clamp_min(1e-30), final))
    return result


def _fill_ahead(log_lr: Tensor, piece: int) -> Tensor:
    """Pieces after ``piece`` set to ``piece``'s values."""
    later = log_lr.shape[0] - piece - 1
    return torch.cat([log_lr[:piece + 1], log_lr[piece:piece + 1].expand(later, -1)]) if later > 0 else log_lr


@dataclass
class TuneRecord:
    """One finished run of :func:`tune_runs`: seconds since the start, the validation loss of
    the model it trained, the ``h`` it ended with and the ``h_used`` it was trained under."""

    seconds: float
    val_loss: float
    h: dict
    h_used: dict | None = None


def tune_runs(task, space: TrainingSpace, *, budget_s: float, max_runs: int | None = None,
              outer_lr: float = 0.3, refine_lr: float | None = None, seed: int = 0, on_run: Callable[[TuneRecord], Any] | None = None,
              **online: Any) -> list[TuneRecord]:
    """Repeated :func:`online_tune` runs within ``budget_s`` seconds (at least one run). Each
    run starts from the ``h_used`` of the best run so far (lowest validation loss of its
    trained model, ``task.evaluate``): the schedule that model was trained under, which the
    next run replays and refines (starting from the run's final ``h`` replays a different
    schedule, and no later run improved on the first in ``experiments/results/bilevel_real.md``
    of 2026-12-04). The first run steps ``h`` by ``outer_lr``, later runs,
    which refine a tuned schedule, by ``refine_lr`` (default ``outer_lr / 4``); a run that does
    not improve on the best halves it (backtracking, so greedy truncated hypergradients cannot
    run away)."""
    records: list[TuneRecord] = []
    best, h, lr, start = None, None, outer_lr, time.perf_counter()
    refine = outer_lr / 4 if refine_lr is None else refine_lr
    while not records or (time.perf_counter() - start < budget_s and len(records) < (max_runs or 10**9)):
        result = online_tune(task, space, h, outer_lr=lr, seed=seed, **online)
        value = task.evaluate(result.params)["val_loss"]
        value = value if value == value else float("inf")  # NaN: a diverged run
        records.append(TuneRecord(time.perf_counter() - start, value, result.h, result.h_used))
        if best is None or value < best.val_loss:
            best = records[-1]
        else:
            refine *= 0.5
        lr = refine
        h = best.h_used
        if on_run is not None:
            on_run(records[-1])
    return records


class _AdamTree:
    """Adam (Kingma & Ba 2015, the zoo rule) on a dict whose values are tensors or lists."""

    def __init__(self, lr: float):
        self.rule, self.states, self.k = zoo.rule("adam", lr=lr), None, 0

    def set_lr(self, lr: float) -> None:
        """Later steps use ``lr`` (the moments are kept)."""
        self.rule = zoo.rule("adam", lr=lr)

    def step(self, h: dict, g: dict) -> dict:
        keys = sorted(h)
        flat_h = [t for k in keys for t in (h[k] if isinstance(h[k], list) else [h[k]])]
        flat_g = [t for k in keys for t in (g[k] if isinstance(g[k], list) else [g[k]])]
        if self.states is None:
            self.states = init_states(self.rule, flat_h)
        self.k += 1
        new, self.states = apply(self.rule, flat_h, flat_g, self.states, self.k)
        out, i = {}, 0
        for k in keys:
            n = len(h[k]) if isinstance(h[k], list) else 1
            out[k] = [t.detach() for t in new[i:i + n]] if isinstance(h[k], list) else new[i].detach()
            i += n
        return out
