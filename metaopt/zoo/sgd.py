"""Stochastic gradient descent with heavy-ball or Nesterov momentum (torch.optim.SGD's form).

    g_t = grad + wd * p                            (coupled L2, as torch.optim.SGD)
    b_t = g_t                        if t == 1     (torch initialises the buffer with g_1)
    b_t = mu * b_{t-1} + (1 - dampening) * g_t     otherwise
    d_t = g_t + mu * b_t  (nesterov)   or   b_t
    p_t = p_{t-1} - lr * d_t

``cautious=True`` masks ``d_t`` with the cautious mask (Liang et al. 2024, see
:mod:`metaopt.zoo._cautious_mask`), with ``g_t`` the gradient including the L2 term.

Polyak (1964); Nesterov (1983); Sutskever et al., "On the importance of initialization and
momentum in deep learning" (ICML 2013). Defaults: torch.optim.SGD with lr=1e-3.
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from ._cautious_mask import cautious
from ._scalar import nonzero
from .checks import check_min, check_unit, fail
from .registry import member_rule, register
from ._multi_tensor import multi_tensor
from ._weight_decay import coupled_weight_decay


def _init(p):
    return {"momentum_buffer": torch.zeros_like(p)}


def _update(g, p, state, hp, step):
    lr, mu, damp, wd = hp["lr"], hp["momentum"], hp["dampening"], hp["weight_decay"]
    g = coupled_weight_decay(g, p, wd)
    if not nonzero(mu):
        return lr * g, state
    buf = state["momentum_buffer"]
    if isinstance(step, int) and step == 1:
        buf = g.clone()
    elif isinstance(step, int):
        buf = mu * buf + (1 - damp) * g
    else:  # tensor step (vmapped or compiled): same arithmetic without Python branching
        first = (step == 1).to(g.dtype)
        buf = first * g + (1 - first) * (mu * buf + (1 - damp) * g)
    d = g + mu * buf if hp["nesterov"] else buf
    if hp["cautious"]:
        d = cautious(d, g)
    return lr * d, {"momentum_buffer": buf}


def sgd_kernel(ps, gs, st, hp, step):
    """:func:`_update` in place on lists of tensors (the multi-tensor fast path)."""
    lr, mu, damp, wd = hp["lr"], hp["momentum"], hp["dampening"], hp["weight_decay"]
    if wd:
        gs = torch._foreach_add(gs, ps, alpha=wd)
    if not mu:
        torch._foreach_add_(ps, gs, alpha=-lr)
        return
    buf = st["momentum_buffer"]
    if step == 1:
        torch._foreach_copy_(buf, gs)
    else:
        torch._foreach_mul_(buf, mu)
        torch._foreach_add_(buf, gs, alpha=1 - damp)
    if hp["nesterov"]:
        torch._foreach_add_(ps, gs, alpha=-lr)
        torch._foreach_add_(ps, buf, alpha=-lr * mu)
    else:
        torch._foreach_add_(ps, buf, alpha=-lr)


def check_sgd_hp(hp) -> None:
    """SGD's hyperparameters (``lr``, ``momentum``, ``weight_decay``, ``dampening``,
    ``nesterov``); rules built on SGD's step check them too (each rule names its errors)."""
    check_min(hp, "lr")
    check_unit(hp, "momentum", closed=True)
    check_min(hp, "weight_decay")
    check_unit(hp, "dampening", closed=True)
    if hp["nesterov"] and (not nonzero(hp["momentum"]) or hp["dampening"] != 0):
        fail("nesterov=True requires momentum > 0 and dampening = 0")


@register("sgd", sample={"momentum": 0.9, "weight_decay": 0.01})
def sgd() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False,
            "cautious": False},
        check=check_sgd_hp,
        caps=Capabilities(fused=multi_tensor(sgd_kernel, ["momentum_buffer"], _update,
                                             devices=("cpu",))),
    )
