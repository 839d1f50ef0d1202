"""DoG, Distance over Gradients (Ivgi, Hinder & Carmon, "DoG is SGD's Best Friend: A
Parameter-Free Dynamic Step Size Schedule", ICML 2023; code: formll/dog src/dog/dog.py):

    g_t     = grad + wd p_t                                    (coupled L2)
    rbar_t  = max(reps_rel (1 + ||p_0||), max_{i<=t} ||p_i - p_0||)
    G_t     = eps + sum_{i<=t} ||g_i||^2
    p_{t+1} = p_t - lr rbar_t / sqrt(G_t) g_t

An update rule sees one tensor at a time, so the norms are per tensor: this is the paper's
layer-wise variant (LDoG, the official ``LDoG`` class), which equals DoG for a group holding
one tensor. Defaults (official code): lr 1.0, reps_rel 1e-6 (its suggested value; 1e-4 with
batch norm), eps 1e-8, weight_decay 0. The initial point ``x0`` is taken by ``init``.
"""
from __future__ import annotations

import torch

from ..rule import UpdateRule
from ._scalar import select
from .checks import check_min
from .registry import member_rule, register
from ._weight_decay import coupled_weight_decay


def _init(p):
    zero = torch.zeros((), dtype=p.dtype, device=p.device)
    return {"x0": p.clone(), "rbar": zero, "G": zero.clone()}


def _update(g, p, state, hp, step):
    g = coupled_weight_decay(g, p, hp["weight_decay"])
    first = step == 1
    r_init = hp["reps_rel"] * (1 + state["x0"].norm())
    rbar = select(first, r_init, torch.maximum(state["rbar"], (p - state["x0"]).norm()))
    G = select(first, state["G"] + hp["eps"], state["G"]) + (g * g).sum()
    eta = hp["lr"] * rbar / G.sqrt()
    return eta * g, {"x0": state["x0"], "rbar": rbar, "G": G}


def _check(hp):
    check_min(hp, "lr", 0.0, strict=True)
    check_min(hp, "reps_rel", 0.0, strict=True)
    check_min(hp, "eps")
    check_min(hp, "weight_decay")


@register("dog",
          sample={"lr": 0.9},
          opt_out={"low_precision": "its first steps are reps_rel (1e-6) times the weights' norm, below "
                       "bf16/fp16 resolution until the distance grows"})
def dog() -> UpdateRule:
    return member_rule(_init, _update,
                       hp={"lr": 1.0, "reps_rel": 1e-6, "eps": 1e-8, "weight_decay": 0.0},
                       check=_check, elementwise=False)
