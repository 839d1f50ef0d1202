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

Low precision: for bf16/fp16 parameters the statistics (``x0``, ``rbar``, ``G``) are kept and
computed in float32, and the distance ``||p_t - p_0||`` is that of the steps taken, summed in
float32 (``moved``): the first steps, ``reps_rel`` times the weights' norm, are below bf16/fp16
resolution, so the rounded parameters would not move and ``rbar`` would never grow (the
official code, in the parameters' dtype, stalls there). For float32/float64 parameters the
rule is the official one, unchanged.
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from ._scalar import select
from .checks import check_min
from .registry import member_rule, register
from ._weight_decay import coupled_weight_decay
from ..helpers import compute_dtype


def _init(p):
    dtype = compute_dtype(p.dtype)
    zero = torch.zeros((), dtype=dtype, device=p.device)
    state = {"x0": p.to(dtype, copy=True), "rbar": zero, "G": zero.clone()}
    if dtype != p.dtype:  # bf16/fp16: the distance travelled, kept in float32
        state["moved"] = torch.zeros_like(p, dtype=dtype)
    return state


def _update(g, p, state, hp, step):
    low, dtype = "moved" in state, p.dtype
    if low:
        g, p = g.to(state["x0"].dtype), p.to(state["x0"].dtype)
    g = coupled_weight_decay(g, p, hp["weight_decay"])
    first = step == 1
    r_init = hp["reps_rel"] * (1 + state["x0"].norm())
    dist = (state["moved"] if low else p - state["x0"]).norm()
    rbar = select(first, r_init, torch.maximum(state["rbar"], dist))
    G = select(first, state["G"] + hp["eps"], state["G"]) + (g * g).sum()
    eta = hp["lr"] * rbar / G.sqrt()
    delta = eta * g
    new = {"x0": state["x0"], "rbar": rbar, "G": G}
    if low:
        new["moved"] = state["moved"] - delta
    return delta.to(dtype), new


def _check(hp):
    check_min(hp, "lr", 0.0, strict=True)
    check_min(hp, "reps_rel", 0.0, strict=True)
    check_min(hp, "eps")
    check_min(hp, "weight_decay")


@register("dog", sample={"lr": 0.9, "reps_rel": 1e-3})
def dog() -> UpdateRule:
    return member_rule(_init, _update,
                       hp={"lr": 1.0, "reps_rel": 1e-6, "eps": 1e-8, "weight_decay": 0.0},
                       check=_check, caps=Capabilities(elementwise=False))
