"""Meta-gradient estimators over one truncation of every slot of an :class:`InnerPool`.

* **PES** (persistent evolution strategies; Vicol, Metz & Sohl-Dickstein, ICML 2021): each slot
  keeps an antithetic pair of inner trajectories, run with ``theta + eps`` and ``theta - eps``
  (fresh ``eps ~ N(0, std^2 I)`` every truncation), and the sum ``xi`` of every ``eps`` since the
  slot's last reset. The estimate ``xi (L+ - L-) / (2 std^2)`` is unbiased for the gradient of the
  Gaussian-smoothed truncation loss *through the whole unroll so far* (no truncation bias).
* **ES** (antithetic truncated ES; Salimans et al. 2017, as learned_optimization's
  ``TruncatedES``): both particles start from the slot's one stored state, the estimate is
  ``eps (L+ - L-) / (2 std^2)``, and the positive particle's state is kept. Biased by truncation.
* **TBPTT** (truncated backpropagation through time): ``torch.func.grad`` of the truncation's
  meta-loss with respect to ``theta``, per slot (vmapped), with the inner state detached between
  truncations.

A slot whose loss, parameters or gradient estimate is not finite is logged, left out of the
average, and reset; it never reaches ``theta``.
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import torch

from .base import Theta
from .pool import (InnerPool, add_theta, expand_particles, finite_theta, stack_thetas,
                   take_particle, zeros_like_theta)
from .pytree import tree_index

log = logging.getLogger("learned.meta_train")
METHODS = ("pes", "es", "tbptt")
PARTICLES = {"pes": 2, "es": 1, "tbptt": 1}  # inner states stored per slot


class Estimate(NamedTuple):
    grad: Theta | None  # mean over good slots; None when every slot failed
    meta_loss: float    # mean truncation meta-loss over good slots (nan when none)
    bad: list[int]      # slots that went non-finite (skipped and reset)
    slot_grads: list[Theta]  # the good slots' individual estimates (their spread is the noise)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown meta-training method {method!r}; allowed: {', '.join(METHODS)}")
    return method


def perturbations(theta: Theta, n: int, std: float, generator: torch.Generator) -> list[Theta]:
    """``n`` draws of ``eps ~ N(0, std^2 I)`` shaped like ``theta`` (drawn on the CPU, so the
    same seed gives the same draws on every device)."""
    return [{k: (torch.randn(v.shape, generator=generator, dtype=torch.float64) * std)
             .to(device=v.device, dtype=v.dtype) for k, v in theta.items()} for _ in range(n)]


def estimate(method: str, pool: InnerPool, theta: Theta, std: float,
             generator: torch.Generator) -> Estimate:
    """One meta-gradient estimate with ``method``; advances (and resets) the pool's slots."""
    if method == "tbptt":
        return _tbptt(pool, theta)
    return _pes_or_es(pool, theta, std, generator, persistent=(method == "pes"))


def _pes_or_es(pool: InnerPool, theta: Theta, std: float, generator: torch.Generator,
               persistent: bool) -> Estimate:
    eps = perturbations(theta, len(pool.slots), std, generator)
    results = pool.run(
        lambda s: stack_thetas([add_theta(theta, eps[s]), add_theta(theta, eps[s], -1.0)]),
        width=2, grad=False,
        inner_of=None if persistent else (lambda s: expand_particles(pool.slots[s].inner, 2)))
    grads, losses, bad = [], [], []
    for s, (_, values, inner, ok) in enumerate(results):
        slot = pool.slots[s]
        xi = add_theta(slot.acc, eps[s]) if (persistent and slot.acc is not None) else eps[s]
        scale = (values[0] - values[1]) / (2 * std * std)
        g = {k: v * scale for k, v in xi.items()}
        if not (bool(ok.all()) and finite_theta(g)):
            _skip(pool, s, bad)
            continue
        slot.inner = inner if persistent else take_particle(inner, 0)
        slot.acc = xi if persistent else None
        grads.append(g)
        losses.append(values.mean())
        _reset_if_done(pool, s)
    return _average(grads, losses, bad, theta)


def _tbptt(pool: InnerPool, theta: Theta) -> Estimate:
    results = pool.run(lambda s: theta, width=1, grad=True)
    grads, losses, bad = [], [], []
    for s, (g, values, inner, ok) in enumerate(results):
        g = {k: v.detach() for k, v in tree_index(g, 0).items()}
        if not (bool(ok.all()) and finite_theta(g)):
            _skip(pool, s, bad)
            continue
        pool.slots[s].inner = inner
        grads.append(g)
        losses.append(values.mean())
        _reset_if_done(pool, s)
    return _average(grads, losses, bad, theta)


def _skip(pool: InnerPool, s: int, bad: list[int]) -> None:
    step = int(pool.slots[s].inner[2].max())
    log.warning("meta-train: slot %d (task %s, inner step %d) went non-finite; skipped and reset",
                s, pool.slots[s].task.name, step)
    bad.append(s)
    pool.reset(s)


def _reset_if_done(pool: InnerPool, s: int) -> None:
    if pool.done(s):
        pool.reset(s)


def _average(grads: list[Theta], losses: list, bad: list[int], theta: Theta) -> Estimate:
    if not grads:
        return Estimate(None, float("nan"), bad, [])
    total = zeros_like_theta(theta)
    for g in grads:
        total = add_theta(total, g)
    mean = {k: v / len(grads) for k, v in total.items()}
    return Estimate(mean, float(torch.stack(losses).mean()), bad, grads)

