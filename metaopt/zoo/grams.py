"""Grams, Gradient Descent with Adaptive Momentum Scaling (Cao, Li, Liu & Liu, "Grams:
Gradient Descent with Adaptive Momentum Scaling", arXiv 2412.17107, 2024; code:
Gunale0926/Grams):

    m_t = b1 m_{t-1} + (1 - b1) g_t,   v_t = b2 v_{t-1} + (1 - b2) g_t^2
    u_t = (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)
    p_t = p_{t-1} (1 - lr wd) - lr sign(g_t) |u_t|                (decoupled weight decay)

Adam's magnitude with the current gradient's sign. Defaults (official code): lr 1e-3,
betas (0.9, 0.999), eps 1e-6, weight_decay 0.
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from .adam import adam_direction
from .checks import check_betas, check_min
from .registry import member_rule, register
from ._multi_tensor import adam_denominator, adam_moments_, multi_tensor


def _init(p):
    return {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}


def _update(g, p, state, hp, step):
    d, new = adam_direction(g, state, hp, step)
    return hp["lr"] * (g.sign() * d.abs() + hp["weight_decay"] * p), new


def _kernel(ps, gs, st, hp, step):
    """:func:`_update` in place on lists of tensors (the multi-tensor fast path)."""
    b1, b2 = hp["betas"]
    lr, wd = hp["lr"], hp["weight_decay"]
    m, v = st["exp_avg"], st["exp_avg_sq"]
    adam_moments_(m, v, gs, b1, b2)
    denom = adam_denominator(v, b2, step, hp["eps"])
    size = torch._foreach_abs(m)
    torch._foreach_div_(size, denom)
    sign = torch._foreach_sign(gs)
    if wd:
        torch._foreach_mul_(ps, 1 - lr * wd)
    torch._foreach_addcmul_(ps, sign, size, value=-lr / (1 - b1**step))


def _check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2)
    check_min(hp, "eps")
    check_min(hp, "weight_decay")


@register("grams", sample={"weight_decay": 0.05})
def grams() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.0},
        check=_check,
        caps=Capabilities(fused=multi_tensor(_kernel, ["exp_avg", "exp_avg_sq"], _update)),
    )
