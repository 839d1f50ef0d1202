"""AdamP and SGDP (Heo et al., "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
Scale-invariant Weights", ICLR 2021; code: clovaai/AdamP adamp/adamp.py, adamp/sgdp.py).

Both remove the radial component of the update of a (likely) scale-invariant weight. For a
tensor with more than one dimension, try the views ``channel`` (rows = first dimension) then
``layer`` (the whole tensor); the first view whose max |cosine(g, p)| over rows is below
``delta / sqrt(row length)`` is used:

    p_n = p / (||p||_row + eps)
    u   <- u - p_n * sum_row(p_n * u),       decay scale r = wd_ratio  (else r = 1)

AdamP:  u = m_t / (sqrt(v_t) / sqrt(1 - b2^t) + eps)
        (nesterov: (b1 m_t + (1 - b1) g_t) instead of m_t)
        p_t = p_{t-1} (1 - lr wd r) - lr / (1 - b1^t) * u
SGDP:   b_t = mu b_{t-1} + (1 - dampening) g_t;  u = g_t + mu b_t (nesterov) or b_t
        p_t = p_{t-1} (1 - lr wd r / (1 - mu)) - lr * u

Defaults (official code): AdamP lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0,
delta 0.1, wd_ratio 0.1, nesterov False; SGDP the same delta, wd_ratio, eps with momentum 0,
dampening 0 and lr required by the official code (1e-3 here).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..capabilities import Capabilities
from ..rule import UpdateRule
from .checks import check_betas, check_min, check_unit
from .registry import member_rule, register
from ._sqrt import sqrt0


def _views(p):
    return (p.reshape(p.shape[0], -1), p.reshape(1, -1))


def project(p, g, u, delta, wd_ratio, eps):
    """The update ``u`` without its radial component, and the weight-decay scale."""
    if p.dim() <= 1:
        return u, 1.0
    shape = [-1] + [1] * (p.dim() - 1)
    out = u
    ratio = torch.ones((), dtype=u.dtype, device=u.device)
    wd_ratio = torch.as_tensor(wd_ratio, dtype=u.dtype, device=u.device)
    # the channel view takes precedence: apply the layer view first, then let channel override
    for view in (1, 0):
        pv, gv = _views(p)[view], _views(g)[view]
        cos = F.cosine_similarity(gv, pv, dim=1, eps=eps).abs()
        hit = cos.max() < delta / math.sqrt(pv.shape[1])
        p_n = p / pv.norm(dim=1).reshape(shape).add(eps)
        radial = (p_n * u).reshape(pv.shape).sum(dim=1).reshape(shape)
        out = torch.where(hit, u - p_n * radial, out)
        ratio = torch.where(hit, wd_ratio, ratio)
    return out, ratio


def _adamp_init(p):
    return {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}


def _adamp_update(g, p, state, hp, step):
    b1, b2 = hp["betas"]
    m = torch.lerp(state["exp_avg"], g, 1 - b1)
    v = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
    denom = sqrt0(v) / (1 - b2**step) ** 0.5 + hp["eps"]
    u = (b1 * m + (1 - b1) * g if hp["nesterov"] else m) / denom
    u, ratio = project(p, g, u, hp["delta"], hp["wd_ratio"], hp["eps"])
    lr = hp["lr"]
    delta = lr / (1 - b1**step) * u + lr * hp["weight_decay"] * ratio * p
    return delta, {"exp_avg": m, "exp_avg_sq": v}


def _sgdp_init(p):
    return {"momentum": torch.zeros_like(p)}


def _sgdp_update(g, p, state, hp, step):
    mu = hp["momentum"]
    buf = mu * state["momentum"] + (1 - hp["dampening"]) * g
    u = g + mu * buf if hp["nesterov"] else buf
    u, ratio = project(p, g, u, hp["delta"], hp["wd_ratio"], hp["eps"])
    lr = hp["lr"]
    return lr * u + lr * hp["weight_decay"] * ratio / (1 - mu) * p, {"momentum": buf}


def _check_projection(hp):
    check_min(hp, "lr")
    check_min(hp, "eps")
    check_min(hp, "weight_decay")
    check_min(hp, "delta")
    check_unit(hp, "wd_ratio", closed=True)


def _adamp_check(hp):
    _check_projection(hp)
    check_betas(hp, 2)


def _sgdp_check(hp):
    _check_projection(hp)
    check_unit(hp, "momentum")
    check_unit(hp, "dampening", closed=True)


@register("adamp", sample={"weight_decay": 0.05})
def adamp() -> UpdateRule:
    return member_rule(
        _adamp_init, _adamp_update,
        hp={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "delta": 0.1,
            "wd_ratio": 0.1, "nesterov": False},
        check=_adamp_check, caps=Capabilities(elementwise=False),
    )


@register("sgdp", sample={"momentum": 0.9, "weight_decay": 0.01})
def sgdp() -> UpdateRule:
    return member_rule(
        _sgdp_init, _sgdp_update,
        hp={"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0,
            "nesterov": False, "eps": 1e-8, "delta": 0.1, "wd_ratio": 0.1},
        check=_sgdp_check, caps=Capabilities(elementwise=False),
    )
