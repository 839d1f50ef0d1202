"""Lion, EvoLved Sign Momentum (Chen et al., "Symbolic Discovery of Optimization Algorithms",
NeurIPS 2023; code: google/automl lion/lion_pytorch.py, lucidrains/lion-pytorch):

    u_t  = sign(b1 m_{t-1} + (1 - b1) g_t)
    p_t  = p_{t-1} (1 - lr wd) - lr u_t                       (decoupled weight decay)
    m_t  = b2 m_{t-1} + (1 - b2) g_t

Defaults (official code): lr 1e-4, betas (0.9, 0.99), weight_decay 0.
``cautious=True`` masks ``u_t`` with the cautious mask (Liang et al. 2024; the ``clion`` id).
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from ._cautious_mask import cautious
from ._multi_tensor import multi_tensor
from .checks import check_betas, check_min
from .registry import member_rule, register


def init(p):
    return {"exp_avg": torch.zeros_like(p)}


def update(g, p, state, hp, step):
    b1, b2 = hp["betas"]
    m = state["exp_avg"]
    u = torch.lerp(m, g, 1 - b1).sign()
    if hp["cautious"]:
        u = cautious(u, g)
    return hp["lr"] * (u + hp["weight_decay"] * p), {"exp_avg": torch.lerp(m, g, 1 - b2)}


def lion_kernel(ps, gs, st, hp, step):
    """:func:`update` in place on lists of tensors (the multi-tensor fast path)."""
    b1, b2 = hp["betas"]
    lr, wd = hp["lr"], hp["weight_decay"]
    m = st["exp_avg"]
    u = torch._foreach_lerp(m, gs, 1 - b1)
    torch._foreach_sign_(u)
    if wd:
        torch._foreach_mul_(ps, 1 - lr * wd)
    torch._foreach_add_(ps, u, alpha=-lr)
    torch._foreach_lerp_(m, gs, 1 - b2)


def check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2, closed=True)
    check_min(hp, "weight_decay")


@register("lion", sample={"weight_decay": 0.05})
def lion() -> UpdateRule:
    return member_rule(
        init, update,
        hp={"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0, "cautious": False},
        check=check, caps=Capabilities(fused=multi_tensor(lion_kernel, ["exp_avg"], update)))
