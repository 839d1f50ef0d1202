"""F2SA: the Fully First-order Stochastic Approximation method of Kwon, Kwon, Wright & Nowak,
"A Fully First-Order Method for Stochastic Bilevel Optimization" (ICML 2023, arXiv 2301.10945).

Penalty reformulation: with ``L_lam(x, y, z) = f(x, y) + lam (g(x, y) - g(x, z))``,
``y*_lam = argmin_y f + lam g`` and ``y* = argmin_y g``,

    grad L*_lam(x) = grad_x f(x, y*_lam) + lam (grad_x g(x, y*_lam) - grad_x g(x, y*))

approximates the hypergradient with a bias O(1/lam) (a forward difference with step 1/lam in
the reading of Chen et al., arXiv 2509.02937). Only first derivatives are used.

Algorithm (Kwon et al., Alg. 1), outer step k, T inner steps warm-started from (y_k, z_k):

    z <- z - gamma_k grad_y g(x_k, z; phi)
    y <- y - alpha_k (grad_y f(x_k, y; zeta) + lam_k grad_y g(x_k, y; phi'))
    x_{k+1} = x_k - beta_k [grad_x f(x_k, y; zeta) + lam_k (grad_x g(x_k, y; phi) - grad_x g(x_k, z; phi))]

Schedules used here (ours, following the paper's polynomial form with ``lam_k = gamma_k / alpha_k``
so y and z take the same step on g; exponents a = 5/7, c = 4/7 are the paper's choice for noise
in both levels, which makes lam grow like k^{1/7}), with s = (k + k0) / k0:

    gamma_k = gamma0 s^{-c},   lam_k = min(lam0 s^{a-c}, lam_max),   alpha_k = gamma_k / lam_k,
    beta_k  = beta0 s^{-a}     (the outer step xi * alpha_k of the paper, up to the ratio xi)

Momentum-assisted variant (``momentum=True``): the outer estimator is the recursive
STORM estimator (Cutkosky & Orabona, NeurIPS 2019), as in the paper's momentum variant,
``h_k = G(x_k, y_{k+1}, z_{k+1}; B_k) + (1 - eta_k)(h_{k-1} - G(x_{k-1}, y_k, z_k; B_k))`` with
the same batch B_k in both terms and ``eta_k = min(1, eta0 s^{-a})`` (our choice of schedule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from metaopt import zoo
from metaopt.rule import apply, init_states

from ._losses import check_loss
from ._tree import leaves_of, unflatten


@dataclass(frozen=True)
class F2SASchedule:
    """Step sizes and penalty schedule (see the module docstring)."""

    gamma0: float = 0.1
    lam0: float = 10.0
    beta0: float = 0.1
    a: float = 5 / 7
    c: float = 4 / 7
    k0: float = 1.0
    lam_max: float = math.inf
    inner_steps: int = 10
    eta0: float = 0.5

    def __post_init__(self):
        for name in ("gamma0", "lam0", "beta0", "k0", "lam_max", "eta0"):
            if not getattr(self, name) > 0:
                raise ValueError(f"F2SASchedule: {name}={getattr(self, name)}; it must be > 0")
        if not 0 <= self.c <= self.a:
            raise ValueError(f"F2SASchedule: exponents a={self.a}, c={self.c}; need 0 <= c <= a")
        if self.inner_steps < 1:
            raise ValueError(f"F2SASchedule: inner_steps={self.inner_steps}; it must be >= 1")

    def at(self, k: int) -> dict[str, float]:
        """``gamma, lam, alpha, beta, eta`` at outer step ``k`` (0-based)."""
        s = (k + self.k0) / self.k0
        gamma = self.gamma0 * s ** (-self.c)
        lam = min(self.lam0 * s ** (self.a - self.c), self.lam_max)
        return {"gamma": gamma, "lam": lam, "alpha": gamma / lam, "beta": self.beta0 * s ** (-self.a),
                "eta": min(1.0, self.eta0 * s ** (-self.a))}


def penalty_hypergrad(inner_loss: Callable, outer_loss: Callable, y: Any, z: Any, hparams: Tensor,
                      lam: float, inner_batch: Any = None, outer_batch: Any = None) -> Tensor:
    """``grad_x f(x, y) + lam (grad_x g(x, y) - grad_x g(x, z))``: F2SA's hypergradient
    estimator; at ``y = y*_lam``, ``z = y*`` it is ``grad L*_lam(x)`` exactly. A loss is called
    with its batch only when that batch is not ``None`` (:mod:`bilevel._losses`)."""
    gx = lambda fn, p, batch: torch.func.grad(lambda h: _call(fn, p, h, batch))(hparams)  # noqa: E731
    return gx(outer_loss, y, outer_batch) + lam * (gx(inner_loss, y, inner_batch) - gx(inner_loss, z, inner_batch))


def _call(fn: Callable, p: Any, h: Any, batch: Any) -> Tensor:
    return fn(p, h) if batch is None else fn(p, h, batch)


@dataclass
class F2SAResult:
    """Final ``x`` (hparams), ``y`` (approximate ``y*_lam``), ``z`` (approximate ``y*``), the last
    ``lam`` and the number of first-order oracle calls."""

    hparams: Tensor
    y: Any
    z: Any
    lam: float
    gradient_calls: int


def f2sa(inner_loss: Callable, outer_loss: Callable, params: Any, hparams: Tensor, *, outer_steps: int,
         schedule: F2SASchedule = F2SASchedule(), sample_inner: Callable | None = None,
         sample_outer: Callable | None = None, momentum: bool = False, outer_rule: str = "sgd",
         callback: Callable[[int, Tensor], bool | None] | None = None) -> F2SAResult:
    """Run F2SA for ``outer_steps`` outer steps from ``(x, y, z) = (hparams, params, params)``.

    ``inner_loss`` is g and ``outer_loss`` is f, called ``(params, hparams)`` on the full batch,
    or ``(params, hparams, batch)`` with the batches that ``sample_inner()`` / ``sample_outer()``
    draw (a fresh one per call) when those are given (:mod:`bilevel._losses`).
    ``outer_rule`` ``"sgd"`` is the paper's step ``x -= beta_k h``; any other zoo name applies that
    rule with ``lr = beta_k`` to the estimator (e.g. ``"adam"``). ``callback(k, x)`` may return
    True to stop early. Counts ``gradient_calls`` (one per first-order oracle call).
    """
    if outer_steps < 1:
        raise ValueError(f"outer_steps={outer_steps}; it must be >= 1")
    check_loss(inner_loss, "inner_loss", batched=sample_inner is not None)
    check_loss(outer_loss, "outer_loss", batched=sample_outer is not None)
    p_leaves, p_spec = leaves_of(params, "params")
    draw_g = sample_inner or (lambda: None)
    draw_f = sample_outer or (lambda: None)
    g_y = torch.func.grad(lambda p, h, b: _call(inner_loss, unflatten(p, p_spec), h, b))
    f_y = torch.func.grad(lambda p, h, b: _call(outer_loss, unflatten(p, p_spec), h, b))
    estimator = lambda x, y, z, lam, bg, bf: penalty_hypergrad(  # noqa: E731
        inner_loss, outer_loss, unflatten(y, p_spec), unflatten(z, p_spec), x, lam, bg, bf)
    rule = zoo.rule(outer_rule) if outer_rule != "sgd" else None
    state = init_states(rule, [hparams])[0] if rule is not None else None
    x = hparams.detach()
    y = [p.detach() for p in p_leaves]
    z = [p.detach() for p in p_leaves]
    calls, prev, lam = 0, None, schedule.lam0
    for k in range(outer_steps):
        s = schedule.at(k)
        lam = s["lam"]
        y_old, z_old = y, z
        for _ in range(schedule.inner_steps):
            gz = g_y(z, x, draw_g())
            bg, bf = draw_g(), draw_f()
            gy = [a + lam * b for a, b in zip(f_y(y, x, bf), g_y(y, x, bg))]
            z = [p - s["gamma"] * d for p, d in zip(z, gz)]
            y = [p - s["alpha"] * d for p, d in zip(y, gy)]
            calls += 3
        bg, bf = draw_g(), draw_f()
        h = estimator(x, y, z, lam, bg, bf)
        calls += 3
        if momentum and prev is not None:
            x_prev, h_prev, lam_prev = prev
            h = h + (1 - s["eta"]) * (h_prev - estimator(x_prev, y_old, z_old, lam_prev, bg, bf))
            calls += 3
        prev = (x, h, lam)
        if rule is None:
            x = x - s["beta"] * h
        else:
            (x,), (state,) = apply(rule, [x], [h], [state], k + 1, {"lr": s["beta"]})
        if callback is not None and callback(k, x):
            break
    return F2SAResult(x, unflatten(y, p_spec), unflatten(z, p_spec), lam, calls)
