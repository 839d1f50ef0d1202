"""Adagrad (Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
Stochastic Optimization", JMLR 2011), in torch.optim.Adagrad's form:

    g_t   = grad + wd * p                          (coupled L2)
    lr_t  = lr / (1 + (t - 1) * lr_decay)
    s_t   = s_{t-1} + g_t^2,      s_0 = initial_accumulator_value
    p_t   = p_{t-1} - lr_t * g_t / (sqrt(s_t) + eps)

Defaults (torch.optim.Adagrad): lr 1e-2, lr_decay 0, weight_decay 0,
initial_accumulator_value 0, eps 1e-10. The state ``sum`` equals torch's after every step
(``init`` does not see hyperparameters, so the initial accumulator is added on step 1).
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from ._scalar import select
from .checks import check_min
from .registry import member_rule, register
from ._multi_tensor import fast_path, multi_tensor, pick, plain_numbers, split_dense
from ._sqrt import sqrt0
from ._weight_decay import coupled_weight_decay


def _init(p):
    return {"sum": torch.zeros_like(p)}


def _update(g, p, state, hp, step):
    g = coupled_weight_decay(g, p, hp["weight_decay"])
    acc0 = hp["initial_accumulator_value"]
    prev = select(step == 1, state["sum"] + acc0, state["sum"])
    s = prev + g * g
    clr = hp["lr"] / (1 + (step - 1) * hp["lr_decay"])
    return clr * g / (sqrt0(s) + hp["eps"]), {"sum": s}


def _kernel(ps, gs, st, hp, step):
    """:func:`_update` in place on lists of tensors (the multi-tensor fast path)."""
    acc, wd, acc0 = st["sum"], hp["weight_decay"], hp["initial_accumulator_value"]
    if wd:
        gs = torch._foreach_add(gs, ps, alpha=wd)
    if step == 1 and acc0:
        torch._foreach_add_(acc, acc0)
    torch._foreach_addcmul_(acc, gs, gs)
    denom = torch._foreach_sqrt(acc)
    torch._foreach_add_(denom, hp["eps"])
    clr = hp["lr"] / (1 + (step - 1) * hp["lr_decay"])
    torch._foreach_addcdiv_(ps, gs, denom, value=-clr)


_foreach_fused = multi_tensor(_kernel, ["sum"], _update)


def _fused(params, grads, states, hp, steps):
    """torch's fused Adagrad kernel (``torch._fused_adagrad_``, one pass; CPU, contiguous
    tensors) after the step-1 initial accumulator; :func:`_kernel` block by block for the
    other tensors."""
    if hasattr(torch, "_fused_adagrad_") and params[0].device.type == "cpu":
        idx, rest = split_dense(params, grads, states, ["sum"])
    else:
        idx, rest = [], list(range(len(params)))
    if rest:
        ps, gs, ss, ts = pick(rest, params, grads, states, steps)
        _foreach_fused(ps, gs, ss, hp, ts)
    if not idx:
        return
    hp = plain_numbers(hp)
    ps, gs, ss, ts = pick(idx, params, grads, states, steps)
    sums = [s["sum"] for s in ss]
    first = [x for x, t in zip(sums, ts) if t == 1]
    if first and hp["initial_accumulator_value"]:
        torch._foreach_add_(first, hp["initial_accumulator_value"])
    counts = {t: torch.tensor(float(t)) for t in set(ts)}
    torch._fused_adagrad_(ps, gs, sums, [counts[t] for t in ts], lr=hp["lr"],
                          lr_decay=hp["lr_decay"], weight_decay=hp["weight_decay"],
                          eps=hp["eps"], maximize=False)


def _check(hp):
    for key in ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
        check_min(hp, key)


@register("adagrad", sample={"weight_decay": 0.05})
def adagrad() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0,
            "initial_accumulator_value": 0.0, "eps": 1e-10},
        check=_check, caps=Capabilities(fused=fast_path(_fused, devices=("cpu",))),
    )
