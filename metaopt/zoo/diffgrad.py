"""diffGrad (Dubey et al., "diffGrad: An Optimization Method for Convolutional Neural
Networks", IEEE TNNLS 2020; code: shivram1987/diffGrad diffGrad.py):

    g_t   = grad + wd p                                  (coupled L2, as the official code)
    m_t   = b1 m_{t-1} + (1 - b1) g_t,   v_t = b2 v_{t-1} + (1 - b2) g_t^2
    xi_t  = sigmoid(|g_{t-1} - g_t|)                     (friction; g_0 = 0)
    p_t   = p_{t-1} - lr sqrt(1 - b2^t) / (1 - b1^t) * xi_t m_t / (sqrt(v_t) + eps)

The stored previous gradient is the current one (the official file notes that an early
version overwrote it with the friction coefficient and fixes it; the fixed form is used).
Defaults (official code): lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0.
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from .checks import check_betas, check_min
from .registry import member_rule, register
from ._multi_tensor import multi_tensor
from ._sqrt import sqrt0
from ._weight_decay import coupled_weight_decay


def _init(p):
    z = torch.zeros_like
    return {"exp_avg": z(p), "exp_avg_sq": z(p), "previous_grad": z(p)}


def _update(g, p, state, hp, step):
    b1, b2 = hp["betas"]
    g = coupled_weight_decay(g, p, hp["weight_decay"])
    m = torch.lerp(state["exp_avg"], g, 1 - b1)
    v = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
    friction = torch.sigmoid((state["previous_grad"] - g).abs())
    step_size = hp["lr"] * (1 - b2**step) ** 0.5 / (1 - b1**step)
    delta = step_size * friction * m / (sqrt0(v) + hp["eps"])
    return delta, {"exp_avg": m, "exp_avg_sq": v, "previous_grad": g}


def _kernel(ps, gs, st, hp, step):
    """:func:`_update` in place on lists of tensors (the multi-tensor fast path)."""
    b1, b2 = hp["betas"]
    m, v, prev, wd = st["exp_avg"], st["exp_avg_sq"], st["previous_grad"], hp["weight_decay"]
    if wd:
        gs = torch._foreach_add(gs, ps, alpha=wd)
    torch._foreach_lerp_(m, gs, 1 - b1)
    torch._foreach_mul_(v, b2)
    torch._foreach_addcmul_(v, gs, gs, value=1 - b2)
    friction = torch._foreach_sub(prev, gs)
    torch._foreach_abs_(friction)
    torch._foreach_sigmoid_(friction)
    torch._foreach_mul_(friction, m)
    denom = torch._foreach_sqrt(v)
    torch._foreach_add_(denom, hp["eps"])
    step_size = hp["lr"] * (1 - b2**step) ** 0.5 / (1 - b1**step)
    torch._foreach_addcdiv_(ps, friction, denom, value=-step_size)
    torch._foreach_copy_(prev, gs)


def _check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2)
    check_min(hp, "eps")
    check_min(hp, "weight_decay")


@register("diffgrad", sample={"weight_decay": 0.05})
def diffgrad() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
        check=_check,
        caps=Capabilities(fused=multi_tensor(
            _kernel, ["exp_avg", "exp_avg_sq", "previous_grad"], _update)),
    )
