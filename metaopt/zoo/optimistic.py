"""Optimistic AMSGrad (Wang, Li, Karimi & Li, "An Optimistic Acceleration of AMSGrad for
Nonconvex Optimization", ACML 2021, arXiv 1903.01435, Algorithm 2), with the last gradient
as the guess of the next one (the paper extrapolates past gradients; ``m_{t+1} = g_t`` is
its simplest instance):

    theta_t   = b1 theta_{t-1} + (1 - b1) g_t
    v_t       = b2 v_{t-1} + (1 - b2) g_t^2,          v_0 = eps
    vhat_t    = max(vhat_{t-1}, v_t),                 vhat_0 = eps
    w_{t+1/2} = w_{t-1/2} - lr theta_t / sqrt(vhat_t),   w_{-1/2} = w_1
    h_{t+1}   = b1 theta_{t-1} + (1 - b1) g_t
    w_{t+1}   = w_{t+1/2} - lr h_{t+1} / sqrt(vhat_t)

``h_{t+1}`` uses ``theta_{t-1}`` as printed in the algorithm box (the momentum before this
step's gradient), so no extra buffer is needed. The gradient ``g_t`` is taken at ``w_t`` (the
parameter); the state keeps the half iterate ``w_{t+1/2}`` and the moments. No projection
(unconstrained). Defaults:
lr 1e-3, betas (0.9, 0.999), eps 1e-8 (AMSGrad's, as the paper's experiments).
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from ._scalar import select
from .checks import check_betas, check_min
from .registry import member_rule, register
from ._multi_tensor import multi_tensor


def _init(p):
    z = torch.zeros_like
    return {"half": p.clone(), "exp_avg": z(p), "exp_avg_sq": z(p), "max_exp_avg_sq": z(p)}


def _update(g, p, state, hp, step):
    b1, b2 = hp["betas"]
    lr, eps = hp["lr"], hp["eps"]
    v_prev = select(step == 1, state["exp_avg_sq"] + eps, state["exp_avg_sq"])
    vhat_prev = select(step == 1, state["max_exp_avg_sq"] + eps, state["max_exp_avg_sq"])
    theta = torch.lerp(state["exp_avg"], g, 1 - b1)
    v = b2 * v_prev + (1 - b2) * g * g
    vhat = torch.maximum(vhat_prev, v)
    half = state["half"] - lr * theta / vhat.sqrt()
    h = b1 * state["exp_avg"] + (1 - b1) * g
    new_p = half - lr * h / vhat.sqrt()
    new = {"half": half, "exp_avg": theta, "exp_avg_sq": v, "max_exp_avg_sq": vhat}
    return p - new_p, new


def _kernel(ps, gs, st, hp, step):
    """:func:`_update` in place on lists of tensors (the multi-tensor fast path); ``theta``
    and ``h`` are the same average of the old momentum and ``g``, computed once."""
    b1, b2 = hp["betas"]
    lr, eps = hp["lr"], hp["eps"]
    half, m, v, vhat = st["half"], st["exp_avg"], st["exp_avg_sq"], st["max_exp_avg_sq"]
    if step == 1:
        torch._foreach_add_(v, eps)
        torch._foreach_add_(vhat, eps)
    torch._foreach_lerp_(m, gs, 1 - b1)
    torch._foreach_mul_(v, b2)
    torch._foreach_addcmul_(v, gs, gs, value=1 - b2)
    torch._foreach_maximum_(vhat, v)
    denom = torch._foreach_sqrt(vhat)
    torch._foreach_addcdiv_(half, m, denom, value=-lr)
    torch._foreach_copy_(ps, half)
    torch._foreach_addcdiv_(ps, m, denom, value=-lr)


def _check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2)
    check_min(hp, "eps", 0.0, strict=True)


@register("optimistic_amsgrad", sample={})
def optimistic_amsgrad() -> UpdateRule:
    return member_rule(_init, _update,
                       hp={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}, check=_check,
                       caps=Capabilities(fused=multi_tensor(
                           _kernel, ["half", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"], _update)))
