"""Gravity (Bahrami & Zadeh, "Gravity Optimizer: a Kinematic Approach on Optimization in Deep
Learning", arXiv 2101.09192, 2021):

    M_t    = 1 / max|g_t|                                   (per tensor)
    zeta_t = g_t / (1 + (g_t / M_t)^2)
    beta_t = (beta t + 1) / (t + 2)
    v_t    = beta_t v_{t-1} + (1 - beta_t) zeta_t,    v_0 ~ N(0, std = alpha / lr)
    p_t    = p_{t-1} - lr v_t

Defaults (pytorch-optimizer's ``Gravity``, the reference it is checked against): lr 1e-2,
alpha 0.01, beta 0.9. ``init`` does not see hyperparameters, so it draws a standard normal
from the global torch RNG and step 1 scales it by ``alpha / lr``.
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from ._scalar import select
from .checks import check_min, check_unit
from .registry import member_rule, register


def _init(p):
    return {"v": torch.randn(p.shape, dtype=p.dtype, device=p.device)}  # logical order


def _update(g, p, state, hp, step):
    lr, beta = hp["lr"], hp["beta"]
    v = select(step == 1, state["v"] * (hp["alpha"] / lr), state["v"])
    m_inv = g.abs().max()
    zeta = g / (1 + (g * m_inv) ** 2)
    beta_t = (beta * step + 1) / (step + 2)
    v = torch.lerp(v, zeta, 1 - beta_t)
    return lr * v, {"v": v}


def _check(hp):
    check_min(hp, "lr", 0.0, strict=True)
    check_unit(hp, "alpha")
    check_unit(hp, "beta", closed=True)


@register("gravity",
          sample={},
          opt_out={"independent_tensors": "initialises each velocity with random draws, tensor "
                       "by tensor: tensors stepped together and apart see different draws"})
def gravity() -> UpdateRule:
    return member_rule(_init, _update, hp={"lr": 1e-2, "alpha": 0.01, "beta": 0.9},
                       check=_check, caps=Capabilities(elementwise=False))
