"""Adadelta (Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv 1212.5701, 2012),
in torch.optim.Adadelta's form:

    g_t   = grad + wd * p                                  (coupled L2)
    v_t   = rho v_{t-1} + (1 - rho) g_t^2
    d_t   = sqrt(u_{t-1} + eps) / sqrt(v_t + eps) * g_t
    u_t   = rho u_{t-1} + (1 - rho) d_t^2
    p_t   = p_{t-1} - lr * d_t

Defaults (torch.optim.Adadelta): lr 1.0, rho 0.9, eps 1e-6, weight_decay 0.
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from .checks import check_min, check_unit
from .registry import member_rule, register
from ._multi_tensor import multi_tensor
from ._weight_decay import coupled_weight_decay


def _init(p):
    return {"square_avg": torch.zeros_like(p), "acc_delta": torch.zeros_like(p)}


def _update(g, p, state, hp, step):
    rho, eps = hp["rho"], hp["eps"]
    g = coupled_weight_decay(g, p, hp["weight_decay"])
    v = rho * state["square_avg"] + (1 - rho) * g * g
    d = (state["acc_delta"] + eps).sqrt() / (v + eps).sqrt() * g
    u = rho * state["acc_delta"] + (1 - rho) * d * d
    return hp["lr"] * d, {"square_avg": v, "acc_delta": u}


def _kernel(ps, gs, st, hp, step):
    """:func:`_update` in place on lists of tensors (the multi-tensor fast path)."""
    rho, eps, wd = hp["rho"], hp["eps"], hp["weight_decay"]
    v, acc = st["square_avg"], st["acc_delta"]
    if wd:
        gs = torch._foreach_add(gs, ps, alpha=wd)
    torch._foreach_mul_(v, rho)
    torch._foreach_addcmul_(v, gs, gs, value=1 - rho)
    d = torch._foreach_add(acc, eps)
    torch._foreach_sqrt_(d)
    denom = torch._foreach_add(v, eps)
    torch._foreach_sqrt_(denom)
    torch._foreach_div_(d, denom)
    torch._foreach_mul_(d, gs)
    torch._foreach_mul_(acc, rho)
    torch._foreach_addcmul_(acc, d, d, value=1 - rho)
    torch._foreach_add_(ps, d, alpha=-hp["lr"])


def _check(hp):
    check_min(hp, "lr")
    check_unit(hp, "rho", closed=True)
    check_min(hp, "eps")
    check_min(hp, "weight_decay")


@register("adadelta", sample={"weight_decay": 0.05})
def adadelta() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0},
        check=_check,
        caps=Capabilities(fused=multi_tensor(_kernel, ["square_avg", "acc_delta"], _update)),
    )
