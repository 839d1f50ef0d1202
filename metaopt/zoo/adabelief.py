"""AdaBelief (Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in
Observed Gradients", NeurIPS 2020; code: juntang-zhuang/Adabelief-Optimizer, PyPI
adabelief-pytorch 0.2.1, whose update and defaults these are):

    p   <- p (1 - lr wd)                  (weight_decouple=True; else g_t = grad + wd p)
    m_t = b1 m_{t-1} + (1 - b1) g_t
    s_t = b2 s_{t-1} + (1 - b2) (g_t - m_t)^2 + eps          (eps inside the state, Alg. 2)
    rectify=False:  p_t = p - lr / (1 - b1^t) * m_t / (sqrt(s_t) / sqrt(1 - b2^t) + eps)
    rectify=True (RAdam's rectification, Liu et al. ICLR 2020):
        rho_inf = 2 / (1 - b2) - 1,   rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        rho_t >= 5:  r_t = sqrt((1 - b2^t)(rho_t - 4)(rho_t - 2) rho_inf
                               / ((rho_inf - 4)(rho_inf - 2) rho_t))
                     p_t = p - lr r_t / (1 - b1^t) * m_t / (sqrt(s_t) + eps)
        rho_t < 5:   p_t = p - lr / (1 - b1^t) * m_t    (degenerated_to_sgd; else no step)

Defaults (0.2.1): lr 1e-3, betas (0.9, 0.999), eps 1e-16, weight_decay 0,
weight_decouple True, rectify True, degenerated_to_sgd True. (AMSGrad and fixed_decay of
the package are not offered.)
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from ._scalar import select
from .checks import check_betas, check_min
from .registry import member_rule, register
from ._multi_tensor import multi_tensor, weight_decay_
from ._weight_decay import split_weight_decay


def _init(p):
    return {"exp_avg": torch.zeros_like(p), "exp_avg_var": torch.zeros_like(p)}


def rectification(b2, step):
    """RAdam's ``(rho_t, r_t)``; ``r_t`` is only meaningful where ``rho_t >= 5``."""
    b2t = b2**step
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * step * b2t / (1 - b2t)
    if not isinstance(rho_inf, torch.Tensor) and rho_inf <= 5:  # rho_t < rho_inf: never used
        return rho, 0.0
    ratio = (1 - b2t) * (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)
    ratio = ratio.clamp(min=0) if isinstance(ratio, torch.Tensor) else max(ratio, 0.0)
    return rho, ratio**0.5


def _update(g, p, state, hp, step):
    b1, b2 = hp["betas"]
    lr, wd, eps = hp["lr"], hp["weight_decay"], hp["eps"]
    g, decay = split_weight_decay(g, p, lr, wd, hp["weight_decouple"])
    m = torch.lerp(state["exp_avg"], g, 1 - b1)
    s = b2 * state["exp_avg_var"] + (1 - b2) * (g - m) ** 2 + eps
    bc1 = 1 - b1**step
    if not hp["rectify"]:
        d = m / bc1 / (s.sqrt() / (1 - b2**step) ** 0.5 + eps)
    else:
        rho, r = rectification(b2, step)
        adaptive = r / bc1 * m / (s.sqrt() + eps)
        sgd = m / bc1 if hp["degenerated_to_sgd"] else torch.zeros_like(m)
        d = select(rho >= 5, adaptive, sgd)
    return lr * d + decay, {"exp_avg": m, "exp_avg_var": s}


def _kernel(ps, gs, st, hp, step):
    """:func:`_update` in place on lists of tensors (the multi-tensor fast path)."""
    b1, b2 = hp["betas"]
    lr, wd, eps = hp["lr"], hp["weight_decay"], hp["eps"]
    m, s = st["exp_avg"], st["exp_avg_var"]
    gs = weight_decay_(ps, gs, lr, wd, hp["weight_decouple"])
    torch._foreach_lerp_(m, gs, 1 - b1)
    diff = torch._foreach_sub(gs, m)
    torch._foreach_mul_(s, b2)
    torch._foreach_addcmul_(s, diff, diff, value=1 - b2)
    torch._foreach_add_(s, eps)
    bc1 = 1 - b1**step
    if not hp["rectify"]:
        denom = torch._foreach_sqrt(s)
        torch._foreach_div_(denom, (1 - b2**step) ** 0.5)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(ps, m, denom, value=-lr / bc1)
        return
    rho, r = rectification(b2, step)
    if rho >= 5:
        denom = torch._foreach_sqrt(s)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(ps, m, denom, value=-lr * r / bc1)
    elif hp["degenerated_to_sgd"]:
        torch._foreach_add_(ps, m, alpha=-lr / bc1)


def _check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2)
    check_min(hp, "eps")
    check_min(hp, "weight_decay")


@register("adabelief", sample={"weight_decay": 0.05})
def adabelief() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-16, "weight_decay": 0.0,
            "weight_decouple": True, "rectify": True, "degenerated_to_sgd": True},
        check=_check,
        caps=Capabilities(fused=multi_tensor(_kernel, ["exp_avg", "exp_avg_var"], _update)),
    )
