"""AdEMAMix, a mixture of a fast and a slow gradient EMA (Pagliardini, Ablin & Grangier,
"The AdEMAMix Optimizer: Better, Faster, Older", ICLR 2025; code: apple/ml-ademamix
pytorch/ademamix.py):

    m1_t = b1 m1_{t-1} + (1 - b1) g_t                         (fast EMA)
    m2_t = b3_t m2_{t-1} + (1 - b3_t) g_t                     (slow EMA, no bias correction)
    v_t  = b2 v_{t-1} + (1 - b2) g_t^2
    p_t  = p_{t-1} - lr [ (m1_t / (1 - b1^t) + alpha_t m2_t) / (sqrt(v_t / (1 - b2^t)) + eps)
                          + wd p_{t-1} ]

with optional warm-ups (official code's schedulers): for t < alpha_warmup,
``alpha_t = alpha t / alpha_warmup``; for t < beta3_warmup, b3_t interpolates the half-life
``f(b) = ln 0.5 / ln(b + 1e-8) - 1`` linearly from b1 to b3 and maps back with
``f^-1(h) = 0.5^(1 / (h + 1))``. Defaults (official code): lr 1e-3, betas
(0.9, 0.999, 0.9999), alpha 2.0, beta3_warmup None, alpha_warmup None, eps 1e-8,
weight_decay 0.
"""
from __future__ import annotations

import math

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from ._scalar import select
from .checks import check_betas, check_min
from .registry import member_rule, register
from ._multi_tensor import adam_denominator, adam_moments_, multi_tensor
from ._sqrt import sqrt0


def _init(p):
    z = torch.zeros_like
    return {"exp_avg_fast": z(p), "exp_avg_slow": z(p), "exp_avg_sq": z(p)}


def alpha_schedule(step, alpha, warmup):
    """Linear warm-up of ``alpha`` from 0 over ``warmup`` steps (None: constant)."""
    if warmup is None:
        return alpha
    return select(step < warmup, alpha * step / warmup, alpha)


def _half_life(beta):
    log = torch.log if isinstance(beta, torch.Tensor) else math.log
    return math.log(0.5) / log(beta + 1e-8) - 1


def beta3_schedule(step, beta1, beta3, warmup):
    """Warm-up of ``beta3`` from ``beta1``, linear in the EMA's half-life (None: constant)."""
    if warmup is None:
        return beta3
    a = step / warmup
    h = (1 - a) * _half_life(beta1) + a * _half_life(beta3)
    return select(step < warmup, 0.5 ** (1 / (h + 1)), beta3)


def _update(g, p, state, hp, step):
    b1, b2, b3 = hp["betas"]
    alpha = alpha_schedule(step, hp["alpha"], hp["alpha_warmup"])
    b3 = beta3_schedule(step, b1, b3, hp["beta3_warmup"])
    m1 = torch.lerp(state["exp_avg_fast"], g, 1 - b1)
    m2 = torch.lerp(state["exp_avg_slow"], g, 1 - b3)
    v = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
    denom = sqrt0(v) / (1 - b2**step) ** 0.5 + hp["eps"]
    d = (m1 / (1 - b1**step) + alpha * m2) / denom
    new = {"exp_avg_fast": m1, "exp_avg_slow": m2, "exp_avg_sq": v}
    return hp["lr"] * (d + hp["weight_decay"] * p), new


def _kernel(ps, gs, st, hp, step):
    """:func:`_update` in place on lists of tensors (the multi-tensor fast path)."""
    b1, b2, b3 = hp["betas"]
    alpha = alpha_schedule(step, hp["alpha"], hp["alpha_warmup"])
    b3 = beta3_schedule(step, b1, b3, hp["beta3_warmup"])
    lr, wd = hp["lr"], hp["weight_decay"]
    m1, m2, v = st["exp_avg_fast"], st["exp_avg_slow"], st["exp_avg_sq"]
    adam_moments_(m1, v, gs, b1, b2)
    torch._foreach_lerp_(m2, gs, 1 - b3)
    denom = adam_denominator(v, b2, step, hp["eps"])
    num = torch._foreach_div(m1, 1 - b1**step)
    torch._foreach_add_(num, m2, alpha=alpha)
    if wd:
        torch._foreach_mul_(ps, 1 - lr * wd)
    torch._foreach_addcdiv_(ps, num, denom, value=-lr)


def _check(hp):
    check_min(hp, "lr")
    check_betas(hp, 3)
    check_min(hp, "alpha")
    check_min(hp, "eps")
    check_min(hp, "weight_decay")
    for key in ("alpha_warmup", "beta3_warmup"):
        if hp[key] is not None:
            check_min(hp, key, 0.0, strict=True)


@register("ademamix", sample={"weight_decay": 0.05})
def ademamix() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-3, "betas": (0.9, 0.999, 0.9999), "alpha": 2.0, "beta3_warmup": None,
            "alpha_warmup": None, "eps": 1e-8, "weight_decay": 0.0},
        check=_check,
        caps=Capabilities(fused=multi_tensor(
            _kernel, ["exp_avg_fast", "exp_avg_slow", "exp_avg_sq"], _update)),
    )
