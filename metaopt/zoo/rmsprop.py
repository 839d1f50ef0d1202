"""RMSprop (Tieleman & Hinton, COURSERA lecture 6.5, 2012; centered form: Graves,
"Generating Sequences With Recurrent Neural Networks", 2013), in torch.optim.RMSprop's form:

    g_t   = grad + wd * p                          (coupled L2)
    v_t   = alpha v_{t-1} + (1 - alpha) g_t^2
    a_t   = alpha a_{t-1} + (1 - alpha) g_t        (centered only)
    d_t   = g_t / (sqrt(v_t - a_t^2) + eps)        (centered; sqrt(v_t) + eps otherwise)
    b_t   = mu b_{t-1} + d_t                       (momentum mu > 0; b_t = d_t otherwise)
    p_t   = p_{t-1} - lr * b_t

Defaults (torch.optim.RMSprop): lr 1e-2, alpha 0.99, eps 1e-8, weight_decay 0, momentum 0,
centered False. ``init`` does not see hyperparameters, so the state always holds
``square_avg``, ``grad_avg`` and ``momentum_buffer`` (the last two stay zero when unused).
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from ._scalar import nonzero
from .checks import check_min, check_unit
from .registry import member_rule, register
from ._multi_tensor import multi_tensor
from ._sqrt import sqrt0
from ._weight_decay import coupled_weight_decay


def _init(p):
    z = torch.zeros_like
    return {"square_avg": z(p), "grad_avg": z(p), "momentum_buffer": z(p)}


def _update(g, p, state, hp, step):
    alpha, mu = hp["alpha"], hp["momentum"]
    g = coupled_weight_decay(g, p, hp["weight_decay"])
    v = alpha * state["square_avg"] + (1 - alpha) * g * g
    new = dict(state, square_avg=v)
    if hp["centered"]:
        a = torch.lerp(state["grad_avg"], g, 1 - alpha)
        new["grad_avg"] = a
        v = v - a * a
    d = g / (sqrt0(v) + hp["eps"])
    if nonzero(mu):
        d = mu * state["momentum_buffer"] + d
        new["momentum_buffer"] = d
    return hp["lr"] * d, new


def _kernel(ps, gs, st, hp, step):
    """:func:`_update` in place on lists of tensors (the multi-tensor fast path)."""
    alpha, mu, wd = hp["alpha"], hp["momentum"], hp["weight_decay"]
    v = st["square_avg"]
    if wd:
        gs = torch._foreach_add(gs, ps, alpha=wd)
    torch._foreach_mul_(v, alpha)
    torch._foreach_addcmul_(v, gs, gs, value=1 - alpha)
    if hp["centered"]:
        avg = st["grad_avg"]
        torch._foreach_lerp_(avg, gs, 1 - alpha)
        denom = torch._foreach_addcmul(v, avg, avg, value=-1)
        torch._foreach_clamp_min_(denom, 0.0)  # sqrt0: 0 where the centred estimate is <= 0
        torch._foreach_sqrt_(denom)
    else:
        denom = torch._foreach_sqrt(v)
    torch._foreach_add_(denom, hp["eps"])
    if mu:
        buf = st["momentum_buffer"]
        torch._foreach_mul_(buf, mu)
        torch._foreach_addcdiv_(buf, gs, denom)
        torch._foreach_add_(ps, buf, alpha=-hp["lr"])
    else:
        torch._foreach_addcdiv_(ps, gs, denom, value=-hp["lr"])


def _check(hp):
    check_min(hp, "lr")
    check_unit(hp, "alpha", closed=True)
    check_min(hp, "eps")
    check_min(hp, "weight_decay")
    check_min(hp, "momentum")


@register("rmsprop", sample={"momentum": 0.5, "centered": True})
def rmsprop() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
            "centered": False},
        check=_check,
        caps=Capabilities(fused=multi_tensor(
            _kernel, ["square_avg", "grad_avg", "momentum_buffer"], _update)),
    )
