"""NAdam, Adam with Nesterov momentum (Dozat, "Incorporating Nesterov Momentum into Adam",
ICLR 2016 workshop), with the momentum schedule of torch.optim.NAdam:

    g_t   = grad + wd * p       (coupled; decoupled_weight_decay: p <- p (1 - lr wd) instead)
    mu_t  = b1 (1 - 0.5 * 0.96^(t psi)),   psi = momentum_decay
    P_t   = prod_{i<=t} mu_i                               (state ``mu_product``)
    m_t   = b1 m_{t-1} + (1 - b1) g_t
    v_t   = b2 v_{t-1} + (1 - b2) g_t^2
    D_t   = sqrt(v_t / (1 - b2^t)) + eps
    p_t   = p_{t-1} - lr [(1 - mu_t) / (1 - P_t) g_t + mu_{t+1} / (1 - P_t mu_{t+1}) m_t] / D_t

Defaults (torch.optim.NAdam): lr 2e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0,
momentum_decay 4e-3, decoupled_weight_decay False.
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule

from .checks import check_betas, check_min
from .registry import member_rule, register
from ._multi_tensor import blocks, by_step, fast_path, plain_numbers, weight_decay_
from ._sqrt import sqrt0
from ._weight_decay import split_weight_decay


def _init(p):
    # the momentum product is kept in at least float32 (as torch does); as a 0-d tensor it
    # does not promote the dtype of the update.
    dtype = torch.promote_types(p.dtype, torch.float32)
    return {"mu_product": torch.ones((), dtype=dtype, device=p.device),
            "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}


def _update(g, p, state, hp, step):
    b1, b2 = hp["betas"]
    lr, wd, psi = hp["lr"], hp["weight_decay"], hp["momentum_decay"]
    g, decay = split_weight_decay(g, p, lr, wd, hp["decoupled_weight_decay"])
    mu = b1 * (1.0 - 0.5 * 0.96 ** (step * psi))
    mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * psi))
    prod = state["mu_product"] * mu
    m = torch.lerp(state["exp_avg"], g, 1 - b1)
    v = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
    denom = sqrt0(v / (1 - b2**step)) + hp["eps"]
    d = ((1 - mu) / (1 - prod) * g + mu_next / (1 - prod * mu_next) * m) / denom
    return lr * d + decay, {"mu_product": prod, "exp_avg": m, "exp_avg_sq": v}


def _kernel(ps, gs, st, hp, step, prod):
    """:func:`_update` in place on lists of tensors whose momentum products (after this
    step's factor) all equal ``prod``."""
    b1, b2 = hp["betas"]
    lr, wd, psi = hp["lr"], hp["weight_decay"], hp["momentum_decay"]
    m, v = st["exp_avg"], st["exp_avg_sq"]
    gs = weight_decay_(ps, gs, lr, wd, hp["decoupled_weight_decay"])
    mu = b1 * (1.0 - 0.5 * 0.96 ** (step * psi))
    mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * psi))
    torch._foreach_lerp_(m, gs, 1 - b1)
    torch._foreach_mul_(v, b2)
    torch._foreach_addcmul_(v, gs, gs, value=1 - b2)
    denom = torch._foreach_div(v, 1 - b2**step)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, hp["eps"])
    torch._foreach_addcdiv_(ps, gs, denom, value=-lr * (1 - mu) / (1 - prod))
    torch._foreach_addcdiv_(ps, m, denom, value=-lr * mu_next / (1 - prod * mu_next))


def _fused(params, grads, states, hp, steps):
    """The multi-tensor fast path: each tensor's momentum product advanced in place, then
    :func:`_kernel` block by block over the tensors sharing a step and a product."""
    hp = plain_numbers(hp)
    b1, psi = hp["betas"][0], hp["momentum_decay"]
    for step, idx in by_step(steps):
        prods = [states[i]["mu_product"] for i in idx]
        torch._foreach_mul_(prods, b1 * (1.0 - 0.5 * 0.96 ** (step * psi)))
        groups: dict[float, list[int]] = {}
        for i, value in zip(idx, torch.stack(prods).tolist()):
            groups.setdefault(value, []).append(i)
        for prod, ids in groups.items():
            for ps, gs, st in blocks([params[i] for i in ids], [grads[i] for i in ids],
                                     [states[i] for i in ids], ["exp_avg", "exp_avg_sq"]):
                _kernel(ps, gs, st, hp, step, prod)


def _check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2)
    check_min(hp, "eps")
    check_min(hp, "weight_decay")
    check_min(hp, "momentum_decay")


@register("nadam", sample={"weight_decay": 0.05})
def nadam() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
            "momentum_decay": 4e-3, "decoupled_weight_decay": False},
        check=_check, caps=Capabilities(fused=fast_path(_fused)),
    )
