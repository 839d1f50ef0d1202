"""AdaBound (Luo, Xiong, Liu & Sun, "Adaptive Gradient Methods with Dynamic Bound of Learning
Rate", ICLR 2019; code: Luolc/AdaBound adabound/adabound.py, PyPI adabound 0.0.5):

    g_t   = grad + wd p                                          (coupled L2)
    m_t   = b1 m_{t-1} + (1 - b1) g_t,   v_t = b2 v_{t-1} + (1 - b2) g_t^2
    vmax_t = max(vmax_{t-1}, v_t)                                (amsbound only)
    eta_t = lr sqrt(1 - b2^t) / (1 - b1^t) / (sqrt(v_t) + eps)
    lo_t  = final_lr (1 - 1 / (gamma t + 1)),   hi_t = final_lr (1 + 1 / (gamma t))
    p_t   = p_{t-1} - clip(eta_t, lo_t, hi_t) * m_t

Defaults (official code): lr 1e-3, betas (0.9, 0.999), final_lr 0.1, gamma 1e-3, eps 1e-8,
weight_decay 0, amsbound False. The official code rescales ``final_lr`` by ``lr / base_lr``
so an LR scheduler moves the bounds too; a rule does not see the initial lr, so here
``final_lr`` is used as given (identical under a constant lr; scale it yourself otherwise).
State always holds ``max_exp_avg_sq`` (zero unless amsbound).
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from .checks import check_betas, check_min, check_unit
from .registry import member_rule, register
from ._multi_tensor import multi_tensor
from ._sqrt import sqrt0
from ._weight_decay import coupled_weight_decay


def _init(p):
    z = torch.zeros_like
    return {"exp_avg": z(p), "exp_avg_sq": z(p), "max_exp_avg_sq": z(p)}


def _update(g, p, state, hp, step):
    b1, b2 = hp["betas"]
    g = coupled_weight_decay(g, p, hp["weight_decay"])
    m = torch.lerp(state["exp_avg"], g, 1 - b1)
    v = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
    new = {"exp_avg": m, "exp_avg_sq": v, "max_exp_avg_sq": state["max_exp_avg_sq"]}
    if hp["amsbound"]:
        v = new["max_exp_avg_sq"] = torch.maximum(state["max_exp_avg_sq"], v)
    step_size = hp["lr"] * (1 - b2**step) ** 0.5 / (1 - b1**step)
    final, gamma = hp["final_lr"], hp["gamma"]
    lower = final * (1 - 1 / (gamma * step + 1))
    upper = final * (1 + 1 / (gamma * step))
    eta = (step_size / (sqrt0(v) + hp["eps"])).clamp(lower, upper)
    return eta * m, new


def _kernel(ps, gs, st, hp, step):
    """:func:`_update` in place on lists of tensors (the multi-tensor fast path)."""
    b1, b2 = hp["betas"]
    wd = hp["weight_decay"]
    m, v = st["exp_avg"], st["exp_avg_sq"]
    if wd:
        gs = torch._foreach_add(gs, ps, alpha=wd)
    torch._foreach_lerp_(m, gs, 1 - b1)
    torch._foreach_mul_(v, b2)
    torch._foreach_addcmul_(v, gs, gs, value=1 - b2)
    if hp["amsbound"]:
        torch._foreach_maximum_(st["max_exp_avg_sq"], v)
        v = st["max_exp_avg_sq"]
    step_size = hp["lr"] * (1 - b2**step) ** 0.5 / (1 - b1**step)
    final, gamma = hp["final_lr"], hp["gamma"]
    eta = torch._foreach_sqrt(v)
    torch._foreach_add_(eta, hp["eps"])
    torch._foreach_reciprocal_(eta)
    torch._foreach_mul_(eta, step_size)
    torch._foreach_clamp_min_(eta, final * (1 - 1 / (gamma * step + 1)))
    torch._foreach_clamp_max_(eta, final * (1 + 1 / (gamma * step)))
    torch._foreach_addcmul_(ps, eta, m, value=-1)


def _check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2)
    check_min(hp, "final_lr")
    check_unit(hp, "gamma")
    check_min(hp, "gamma", 0.0, strict=True)
    check_min(hp, "eps")
    check_min(hp, "weight_decay")


@register("adabound", sample={"weight_decay": 0.05})
def adabound() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-3, "betas": (0.9, 0.999), "final_lr": 0.1, "gamma": 1e-3, "eps": 1e-8,
            "weight_decay": 0.0, "amsbound": False},
        check=_check,
        caps=Capabilities(fused=multi_tensor(
            _kernel, ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"], _update)),
    )
