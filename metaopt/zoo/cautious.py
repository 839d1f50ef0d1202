"""Cautious optimizers (Liang, Chen, Liu & Liu, "Cautious Optimizers: Improving Training with
One Line of Code", arXiv 2411.16085, 2024; code: kyleliang919/C-Optim c_adamw.py, c_lion.py).

``cautious=True`` is a hyperparameter of ``adamw``, ``lion`` and ``sgd``; the ids here are the
paper's own optimizers with the official code's defaults.

C-AdamW (``cadamw``; the code builds on Hugging Face's AdamW, so eps is added to sqrt(v)
before the bias correction and the weight decay acts after the step):

    m_t = b1 m_{t-1} + (1 - b1) g_t,   v_t = b2 v_{t-1} + (1 - b2) g_t^2
    phi = 1[m_t g_t > 0] / max(mean(1[m_t g_t > 0]), 1e-3)
    p'  = p_{t-1} - lr sqrt(1 - b2^t) / (1 - b1^t) * (m_t phi) / (sqrt(v_t) + eps)
    p_t = p' (1 - lr wd)

Defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-6, weight_decay 0.
C-Lion (``clion``): Lion with its sign update masked the same way; defaults lr 1e-4,
betas (0.9, 0.99), weight_decay 0.
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from . import lion
from ._cautious_mask import cautious
from .checks import check_betas, check_min
from .registry import member_rule, register
from ._sqrt import sqrt0


def _cadamw_init(p):
    return {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}


def _cadamw_update(g, p, state, hp, step):
    b1, b2 = hp["betas"]
    m = torch.lerp(state["exp_avg"], g, 1 - b1)
    v = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
    step_size = hp["lr"] * (1 - b2**step) ** 0.5 / (1 - b1**step)
    # phi = 1[m g > 0] rescaled; m phi has the sign of the update, so masking m is the same
    u = step_size * cautious(m, g) / (sqrt0(v) + hp["eps"])
    decay = hp["lr"] * hp["weight_decay"]
    return u + decay * (p - u), {"exp_avg": m, "exp_avg_sq": v}


def _cadamw_check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2)
    check_min(hp, "eps")
    check_min(hp, "weight_decay")


@register("cadamw", sample={"weight_decay": 0.05})
def cadamw() -> UpdateRule:
    return member_rule(
        _cadamw_init, _cadamw_update,
        hp={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.0},
        check=_cadamw_check, caps=Capabilities(elementwise=False),
    )


def _clion_update(g, p, state, hp, step):
    return lion.update(g, p, state, dict(hp, cautious=True), step)


@register("clion", sample={"weight_decay": 0.05})
def clion() -> UpdateRule:
    return member_rule(
        lion.init, _clion_update,
        hp={"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0},
        check=lion.check, caps=Capabilities(elementwise=False),
    )
