"""Fitness: the validation loss after K training steps on a proxy task, with the program's
learning rate chosen from a small grid (the Lion search tunes lr per program, Chen et al. 2023,
Sec. 2.3), averaged over seeds. Lower is better; NaN, inf, an exception or running past the
time limit score ``inf`` (worst) and never stop the search.

Three evaluators compute the same numbers:
  * :func:`fitness_serial`: every (lr, seed) trained one after another with
    :func:`metaopt.rule.apply` (the reference, one at a time);
  * :func:`fitness_vmapped`: one program, all (seed, lr) pairs at once with
    ``torch.func.vmap`` over :func:`metaopt.rule.apply`;
  * :func:`search.batched.fitness_batched`: many different programs at once.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from metaopt.rule import apply

from .flat import FlatTask, expand_batch, stack_batches
from .interpret import to_rule
from .program import Program

WORST = math.inf


@dataclass(frozen=True)
class FitnessConfig:
    """``steps`` K, the ``lrs`` grid, the training ``seeds`` and a ``time_limit`` in seconds
    per program."""

    steps: int = 50
    lrs: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    seeds: tuple[int, ...] = (0,)
    time_limit: float = 60.0

    def __post_init__(self):
        if self.steps < 1 or not self.lrs or not self.seeds or self.time_limit <= 0:
            raise ValueError("FitnessConfig: need steps >= 1, a non-empty lrs grid and seeds, "
                             "and time_limit > 0")


@dataclass
class Fitness:
    """The score (lower is better), the best lr and the loss for each lr (mean over seeds).
    On a task family (:mod:`search.family`) ``per_lr`` holds the members' normalised scores,
    ``task_lrs`` each member's tuned lr and ``task_scores`` the scores again (inf where it
    diverged)."""

    value: float
    best_lr: float | None
    per_lr: list[float] = field(default_factory=list)
    seconds: float = 0.0
    task_lrs: list[float | None] | None = None
    task_scores: list[float] | None = None


def reduce_losses(losses: list[list[float]], lrs) -> Fitness:
    """``losses[lr][seed]`` -> the best lr's mean loss (inf if any seed diverged)."""
    per_lr = [sum(row) / len(row) if all(math.isfinite(x) for x in row) else WORST for row in losses]
    best = min(range(len(lrs)), key=lambda i: per_lr[i])
    value = per_lr[best]
    return Fitness(value, lrs[best] if math.isfinite(value) else None, per_lr)


def fitness_serial(prog: Program, task, cfg: FitnessConfig) -> Fitness:
    """Train each (lr, seed) separately; the reference evaluator."""
    start, flat, rule = time.perf_counter(), flat_task(task), to_rule(prog)
    grad = torch.func.grad(flat.loss)
    losses = []
    try:
        for lr in cfg.lrs:
            row = []
            for seed in cfg.seeds:
                theta, gen = flat.init(seed)
                states = [rule.init(theta)]
                for k in range(cfg.steps):
                    g = grad(theta, flat.task.sample_batch(gen))
                    (theta,), states = apply(rule, [theta], [g], states, k + 1, {"lr": lr})
                    if time.perf_counter() - start > cfg.time_limit:
                        return Fitness(WORST, None, [], time.perf_counter() - start)
                row.append(flat.val_loss(theta))
            losses.append(row)
    except (RuntimeError, ValueError, ArithmeticError):
        return Fitness(WORST, None, [], time.perf_counter() - start)
    fit = reduce_losses(losses, cfg.lrs)
    fit.seconds = time.perf_counter() - start
    return fit


def fitness_vmapped(prog: Program, task, cfg: FitnessConfig) -> Fitness:
    """All (seed, lr) pairs of one program at once: ``vmap`` over seeds (each with its own
    batches) of ``vmap`` over the lr grid, around :func:`metaopt.rule.apply`."""
    start, flat, rule = time.perf_counter(), flat_task(task), to_rule(prog)
    try:
        inits = [flat.init(seed) for seed in cfg.seeds]
        n_lr = len(cfg.lrs)
        theta = torch.stack([t for t, _ in inits]).unsqueeze(1).repeat(1, n_lr, 1)
        lrs = torch.tensor(cfg.lrs, dtype=theta.dtype, device=theta.device)
        states = {k: v.expand_as(theta).clone() for k, v in rule.init(theta[0, 0]).items()}
        step_fn = _vmapped_step(rule, flat)
        for k in range(cfg.steps):
            batch = expand_batch(stack_batches([flat.task.sample_batch(gen) for _, gen in inits]),
                                 n_lr)
            t = torch.tensor(float(k + 1), dtype=theta.dtype, device=theta.device)
            theta, states = step_fn(theta, states, batch, lrs, t)
            if time.perf_counter() - start > cfg.time_limit:
                return Fitness(WORST, None, [], time.perf_counter() - start)
        losses = [[flat.val_loss(theta[s, i]) for s in range(len(cfg.seeds))] for i in range(n_lr)]
    except (RuntimeError, ValueError, ArithmeticError):
        return Fitness(WORST, None, [], time.perf_counter() - start)
    fit = reduce_losses(losses, cfg.lrs)
    fit.seconds = time.perf_counter() - start
    return fit


def _vmapped_step(rule, flat: FlatTask):
    grad = torch.func.grad(flat.loss)

    def one(theta, state, batch, lr, t):
        g = grad(theta, batch)
        (new,), (s2,) = apply(rule, [theta], [g], [state], t, {"lr": lr})
        return new, s2

    over_lr = torch.func.vmap(one, in_dims=(0, 0, 0, 0, None))
    return torch.func.vmap(over_lr, in_dims=(0, 0, 0, None, None))


_FLAT_CACHE: dict[int, FlatTask] = {}


def flat_task(task) -> FlatTask:
    """The (cached) flat view of ``task``."""
    key = id(task)
    if key not in _FLAT_CACHE or _FLAT_CACHE[key].task is not task:
        _FLAT_CACHE[key] = FlatTask(task)
    return _FLAT_CACHE[key]
