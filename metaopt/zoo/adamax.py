"""Adamax, the infinity-norm variant of Adam (Kingma & Ba, "Adam: A Method for Stochastic
Optimization", ICLR 2015, Algorithm 2), in torch.optim.Adamax's form:

    g_t   = grad + wd * p                             (coupled L2)
    m_t   = b1 m_{t-1} + (1 - b1) g_t
    u_t   = max(b2 u_{t-1}, |g_t| + eps)
    p_t   = p_{t-1} - lr / (1 - b1^t) * m_t / u_t

Defaults (torch.optim.Adamax): lr 2e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0.
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from .checks import check_betas, check_min
from .registry import member_rule, register
from ._multi_tensor import multi_tensor
from ._weight_decay import coupled_weight_decay


def _init(p):
    return {"exp_avg": torch.zeros_like(p), "exp_inf": torch.zeros_like(p)}


def _update(g, p, state, hp, step):
    b1, b2 = hp["betas"]
    g = coupled_weight_decay(g, p, hp["weight_decay"])
    m = torch.lerp(state["exp_avg"], g, 1 - b1)
    u = torch.maximum(b2 * state["exp_inf"], g.abs() + hp["eps"])
    return hp["lr"] / (1 - b1**step) * m / u, {"exp_avg": m, "exp_inf": u}


def _kernel(ps, gs, st, hp, step):
    """:func:`_update` in place on lists of tensors (the multi-tensor fast path)."""
    b1, b2 = hp["betas"]
    m, u, wd = st["exp_avg"], st["exp_inf"], hp["weight_decay"]
    if wd:
        gs = torch._foreach_add(gs, ps, alpha=wd)
    torch._foreach_lerp_(m, gs, 1 - b1)
    torch._foreach_mul_(u, b2)
    bound = torch._foreach_abs(gs)
    torch._foreach_add_(bound, hp["eps"])
    torch._foreach_maximum_(u, bound)
    torch._foreach_addcdiv_(ps, m, u, value=-hp["lr"] / (1 - b1**step))


def _check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2)
    check_min(hp, "eps")
    check_min(hp, "weight_decay")


@register("adamax", sample={"weight_decay": 0.05})
def adamax() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
        check=_check,
        caps=Capabilities(fused=multi_tensor(_kernel, ["exp_avg", "exp_inf"], _update)),
    )
