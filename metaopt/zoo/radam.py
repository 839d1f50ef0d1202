"""RAdam, rectified Adam (Liu et al., "On the Variance of the Adaptive Learning Rate and
Beyond", ICLR 2020), in torch.optim.RAdam's form:

    g_t   = grad + wd p          (coupled; decoupled_weight_decay: p <- p (1 - lr wd) instead)
    m_t   = b1 m_{t-1} + (1 - b1) g_t,   v_t = b2 v_{t-1} + (1 - b2) g_t^2
    rho_inf = 2 / (1 - b2) - 1,   rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
    rho_t > 5:   r_t = sqrt((1 - b2^t)(rho_t - 4)(rho_t - 2) rho_inf
                            / ((rho_inf - 4)(rho_inf - 2) rho_t))
                 p_t = p_{t-1} - lr r_t m_t / (1 - b1^t) / (sqrt(v_t) + eps)
    otherwise:   p_t = p_{t-1} - lr m_t / (1 - b1^t)

Defaults (torch.optim.RAdam): lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0,
decoupled_weight_decay False.
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from ._scalar import select
from .adabelief import rectification
from .checks import check_betas, check_min
from .registry import member_rule, register
from ._multi_tensor import (adam_moments_, by_step, fast_path, multi_tensor, pick,
                            plain_numbers, split_dense, weight_decay_)
from ._sqrt import sqrt0
from ._weight_decay import split_weight_decay


def _init(p):
    return {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}


def _update(g, p, state, hp, step):
    b1, b2 = hp["betas"]
    lr, wd = hp["lr"], hp["weight_decay"]
    g, decay = split_weight_decay(g, p, lr, wd, hp["decoupled_weight_decay"])
    m = torch.lerp(state["exp_avg"], g, 1 - b1)
    v = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
    m_hat = m / (1 - b1**step)
    rho, r = rectification(b2, step)
    d = select(rho > 5, r * m_hat / (sqrt0(v) + hp["eps"]), m_hat)
    return lr * d + decay, {"exp_avg": m, "exp_avg_sq": v}


def _kernel(ps, gs, st, hp, step):
    """:func:`_update` in place on lists of tensors (the multi-tensor fast path)."""
    b1, b2 = hp["betas"]
    lr, wd = hp["lr"], hp["weight_decay"]
    m, v = st["exp_avg"], st["exp_avg_sq"]
    gs = weight_decay_(ps, gs, lr, wd, hp["decoupled_weight_decay"])
    adam_moments_(m, v, gs, b1, b2)
    bc1 = 1 - b1**step
    rho, r = rectification(b2, step)
    if rho > 5:
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, hp["eps"])
        torch._foreach_addcdiv_(ps, m, denom, value=-lr * r / bc1)
    else:
        torch._foreach_add_(ps, m, alpha=-lr / bc1)


_foreach_fused = multi_tensor(_kernel, ["exp_avg", "exp_avg_sq"], _update)


def _fused(params, grads, states, hp, steps):
    """Rectified steps (``rho_t > 5``) as torch's fused Adam kernel, one pass: with
    ``lr' = lr r / sqrt(1 - b2^t)`` and ``eps' = eps / sqrt(1 - b2^t)`` Adam's
    ``lr' / bc1 * m / (sqrt(v) / sqrt(bc2) + eps')`` is RAdam's ``lr r / bc1 * m /
    (sqrt(v) + eps)`` (AdamW's kernel, with ``wd' = lr wd / lr'``, for decoupled decay).
    The first steps (unrectified) and non-contiguous tensors take :func:`_kernel`."""
    hp = plain_numbers(hp)
    b1, b2 = hp["betas"]
    lr, wd = hp["lr"], hp["weight_decay"]
    decoupled = bool(wd) and hp["decoupled_weight_decay"]
    kernel = getattr(torch, "_fused_adamw_" if decoupled else "_fused_adam_", None)
    for step, idx in by_step(steps):
        rho, r = rectification(b2, step)
        dense, rest = [], idx
        if kernel is not None and rho > 5 and r > 0:
            d, o = split_dense(*pick(idx, params, grads, states), ["exp_avg", "exp_avg_sq"])
            dense, rest = [idx[i] for i in d], [idx[i] for i in o]
        if rest:
            ps, gs, ss = pick(rest, params, grads, states)
            _foreach_fused(ps, gs, ss, hp, [step] * len(rest))
        if not dense:
            continue
        ps, gs, ss = pick(dense, params, grads, states)
        bc2_sqrt = (1 - b2**step) ** 0.5
        lr_adam = lr * r / bc2_sqrt
        t = torch.full((), float(step), dtype=torch.float32, device=ps[0].device)
        kernel(ps, gs, [s["exp_avg"] for s in ss], [s["exp_avg_sq"] for s in ss], [],
               [t] * len(ps), amsgrad=False, lr=lr_adam, beta1=b1, beta2=b2,
               weight_decay=lr * wd / lr_adam if decoupled else wd,
               eps=hp["eps"] / bc2_sqrt, maximize=False)


def _check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2)
    check_min(hp, "eps")
    check_min(hp, "weight_decay")


@register("radam", sample={"weight_decay": 0.05})
def radam() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
            "decoupled_weight_decay": False},
        check=_check, caps=Capabilities(fused=fast_path(_fused, devices=("cpu", "cuda"))),
    )
