"""AdaFisher and AdaFisherW: Adam's first moment over a diagonal block-Kronecker Fisher.

Martins Gomes, Zhang, Belilovsky, Wolf, Hosseini, "AdaFisher: Adaptive Second Order
Optimization via Fisher Information" (ICLR 2025, arXiv 2405.16397); official code
github.com/AtlasAnalyticsLab/AdaFisher (formerly damien3008/AdaFisher), ``optimizers/AdaFisher.py``.

For a layer ``y = [W, b] a_bar`` with input rows ``a_bar = [a, 1]`` and output gradients ``g``
(:mod:`metaopt.zoo.layer_stats`; N rows), K-FAC's Fisher block is ``G (x) A`` with
``A = a_bar^T a_bar / N`` and ``G = g^T g / N``. AdaFisher keeps only the factors' diagonals,
every ``stat_period``-th step (steps 1, k+1, 2k+1, ...):

    h = diag(A) = mean_rows(a_bar^2),    s = diag(G) = mean_rows(g^2)
    H_t = (gamma / 10) H_prev + (gamma / 100) minmax(h),  H_prev = 1 before the first refresh
    S_t = (gamma / 10) S_prev + (gamma / 100) minmax(s)
    F[o, i] = S_t[o] H_t[i] + damping       (diag(S (x) H) + damping: the weight gets the
                                             first ``in`` columns, the bias the last)

with ``minmax(x) = (x - min x) / (max x - min x + 1e-6)`` (+inf entries read as 1). Every step:

    g_t = grad + wd p                 (AdaFisher; AdaFisherW: g_t = grad)
    m_t = beta m_{t-1} + (1 - beta) g_t
    p_t = p_{t-1} - lr (m_t / (1 - beta^t)) / F       (- lr wd p_{t-1} for AdaFisherW)

There is no square root: F replaces Adam's ``sqrt(v)``. ``decoupled_weight_decay=True`` is
AdaFisherW (the official ``AdaFisherW`` class). A tensor without a
captured layer (:class:`~metaopt.zoo.LayerStatistics` gives ``None``), like an ``nn.LayerNorm``
weight, uses ``F = 1`` (bias-corrected momentum SGD), which is what the official step does for
parameters of layers it does not support. G uses ``g`` as autograd gives it (no factor N);
min-max removes the scale except against its ``1e-6``.

Defaults are the official class's: lr 1e-3, beta 0.9, gamma 0.8, damping (``Lambda``) 1e-3,
stat_period (``TCov``) 100, weight decay 0.

Departures, all deliberate:
  * The factor average is the official code's ``(gamma/10) old + (gamma/100) new`` on min-max
    normalised diagonals, not the paper's Eq. (3) ``gamma old + (1 - gamma) new`` followed by
    min-max (Algorithm 1); the official code is what produced the paper's numbers and what the
    test checks. Likewise the refresh every ``TCov`` steps is the code's (Algorithm 1 refreshes
    every step; ``stat_period=1`` does that).
  * The official code also preconditions ``nn.BatchNorm2d`` and ``nn.LayerNorm`` (with their
    own factor formulas); here only ``nn.Linear`` and ``nn.Conv2d`` (groups 1) are captured and
    normalisation layers take the ``F = 1`` path. The official step pairs parameters with layers
    by position in one param group; here by ownership, in any param groups.
  * Statistics are float32 for bf16/fp16 parameters.
Each tensor of a layer keeps its own copy of the layer's ``H`` and ``S`` (a few vectors), so
the rule stays per tensor.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..capabilities import Capabilities
from ..helpers import compute_dtype
from ..rule import UpdateRule
from ._weight_decay import split_weight_decay
from .checks import check_int, check_min, check_unit, fail
from .registry import member_rule, register

MINMAX_EPS = 1e-6  # the official MinMaxNormalization's epsilon


def minmax(x: Tensor) -> Tensor:
    """``(x - min) / (max - min + 1e-6)`` with ``+inf -> 1``, ``-inf -> 0`` first (the official
    normalisation of a factor's diagonal)."""
    x = torch.where(x == math.inf, 1.0, torch.where(x == -math.inf, 0.0, x))
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo + MINMAX_EPS)


def running_factor(prev: Tensor, new: Tensor, gamma) -> Tensor:
    """The official running average ``(gamma/10) prev + (gamma/100) minmax(new)``."""
    return (gamma * 1e-1) * prev + (gamma * 1e-2) * minmax(new)


def refreshed_diagonals(state: dict, layer_in: Tensor, layer_grad_out: Tensor, gamma,
                        dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(H, S)`` after folding in this step's ``diag(A)`` and ``diag(G)``."""
    a, g = layer_in.to(dtype), layer_grad_out.to(dtype)
    h, s = (a * a).mean(0), (g * g).mean(0)
    h_prev = state.get("h_diag", torch.ones_like(h))
    s_prev = state.get("s_diag", torch.ones_like(s))
    return running_factor(h_prev, h, gamma), running_factor(s_prev, s, gamma)


def diagonal_fisher(p: Tensor, h: Tensor, s: Tensor, damping) -> Tensor:
    """``diag(S (x) H) + damping`` restricted to ``p``: the first ``in`` columns for a weight
    (reshaped like it), the last column for a bias."""
    f = torch.outer(s, h) + damping
    if p.dim() == 1:
        return f[:, -1]
    return f[:, :p[0].numel()].reshape(p.shape)


def _init(p):
    return {"exp_avg": torch.zeros_like(p)}


def _update(g, p, state, hp, step, layer_in=None, layer_grad_out=None):
    lr, beta = hp["lr"], hp["beta"]
    state = dict(state)
    if layer_in is not None and layer_grad_out is not None:
        state["h_diag"], state["s_diag"] = refreshed_diagonals(
            state, layer_in, layer_grad_out, hp["gamma"], compute_dtype(p.dtype))
    g, decay = split_weight_decay(g, p, lr, hp["weight_decay"], hp["decoupled_weight_decay"])
    m = beta * state["exp_avg"] + (1 - beta) * g
    direction = m / (1 - beta ** step)
    if "h_diag" in state:
        direction = direction / diagonal_fisher(p, state["h_diag"], state["s_diag"],
                                                hp["damping"])
    state["exp_avg"] = m
    return (lr * direction + decay).to(p.dtype), state


def _needs(hp, step):
    if (int(step) - 1) % int(hp["stat_period"]) == 0:
        return frozenset({"layer"})
    return frozenset()


def _check(hp):
    check_min(hp, "lr")
    check_unit(hp, "beta")
    check_unit(hp, "gamma")
    check_min(hp, "damping", strict=True)
    check_min(hp, "weight_decay")
    check_int(hp, "stat_period", 1)
    if not isinstance(hp["decoupled_weight_decay"], bool):
        fail(f"invalid decoupled_weight_decay={hp['decoupled_weight_decay']!r}: "
             "must be True or False")


@register("adafisher", sample={"stat_period": 3, "weight_decay": 0.01})
def adafisher() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-3, "beta": 0.9, "gamma": 0.8, "damping": 1e-3, "stat_period": 100,
            "weight_decay": 0.0, "decoupled_weight_decay": False},
        check=_check, caps=Capabilities(needs=_needs, elementwise=False),
    )
