"""XGrad: SGD with momentum, Adam and AdamW with weight prediction.

Step t takes its gradient not at the weights w_t but at the weights the base optimizer is
predicted to reach ``s`` steps ahead, extrapolated along its current update direction:

    w_hat_t = w_t - s * lr * D_{t-1}                   (w_hat_1 = w_1: no state yet)
    g_t     = grad f(w_hat_t)
    w_{t+1} = the base optimizer's step from w_t (not w_hat_t) with g_t

with D_{t-1} the base optimizer's direction from its state after step t-1:

    SGD with momentum (xgrad_sgd):   D = b_{t-1}                              (momentum buffer)
    Adam, AdamW (xgrad_adam/adamw):  D = (m_{t-1} / (1 - b1^(t-1)))
                                         / (sqrt(v_{t-1}) / sqrt(1 - b2^(t-1)) + eps)

The base steps are the zoo's ``sgd``, ``adam`` and ``adamw`` rules unchanged (their ``update``
and fused kernels); this module adds the capability ``predict`` (see
:class:`metaopt.capabilities.Capabilities`) and the prediction step ``s`` (default 1).
:class:`metaopt.RuleOptimizer` therefore needs ``step(closure)``: the closure computes the
gradients at the predicted weights.

Lei Guan, Dongsheng Li, Yanqi Shi, Jian Meng, "XGrad: Boosting Gradient-Based Optimizers With
Weight Prediction", IEEE TPAMI 2024 (arXiv 2305.18240); Lei Guan, "Weight Prediction Boosts
the Convergence of AdamW", PAKDD 2023 (arXiv 2302.00195). Official code: guanleics/XGrad
(``SGD.py``, ``Adam.py``, ``AdamW.py``: ``load_predicted_weights(s)``), whose prediction
formulas these are; defaults as there and in the base members (xgrad_sgd: lr 1e-3,
momentum 0.9; Adam/AdamW: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0 / 1e-2).

Departures, deliberate:
  * the prediction of AdamW extrapolates along the Adam direction only, without the
    decoupled decay term ``wd * w``, and that of SGD along the buffer only (as the official
    ``load_predicted_weights``);
  * xgrad_sgd keeps torch's first buffer ``b_1 = g_1``; the official SGD starts from a zero
    buffer (``b_1 = (1 - dampening) g_1``), the same at the default dampening 0. Momentum
    must be > 0 (without it the base rule keeps no buffer to predict from), and the base's
    ``nesterov`` and ``cautious`` options are rejected (the paper predicts along the plain
    step);
  * xgrad_adam keeps the zoo Adam's coupled weight decay (the official ``Adam.py`` applies
    none; equal at the default 0). The RMSprop, AdaBelief and AdaM3 variants of the TPAMI
    version are not offered (no official code for them).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from torch import Tensor

from ..rule import UpdateRule
from ._scalar import select
from ._sqrt import sqrt0
from .adam import adam, adamw
from .checks import check_min, fail
from .registry import register
from .sgd import sgd


def bias_correction(beta: Any, done: Any) -> Any:
    """``1 - beta^done``, or 1 before any step (``done = 0``, where the moments are zero)."""
    return select(done >= 1, 1 - beta**done, 1.0)


def adam_direction_from_state(state: dict, hp: dict, step: Any) -> Tensor:
    """Adam's bias-corrected direction ``m_hat / (sqrt(v_hat) + eps)`` from the moments after
    step ``step - 1`` (zero for a fresh state)."""
    b1, b2 = hp["betas"]
    done = step - 1
    m_hat = state["exp_avg"] / bias_correction(b1, done)
    return m_hat / (sqrt0(state["exp_avg_sq"]) / bias_correction(b2, done) ** 0.5 + hp["eps"])


def _predict_adam(p: Tensor, state: dict, hp: dict, step: Any) -> Tensor:
    return p - hp["s"] * hp["lr"] * adam_direction_from_state(state, hp, step)


def _predict_sgd(p: Tensor, state: dict, hp: dict, step: Any) -> Tensor:
    return p - hp["s"] * hp["lr"] * state["momentum_buffer"]


def _check(base: UpdateRule, plain: tuple[str, ...] = (),
           extra: Callable[[dict], None] | None = None) -> Callable[[dict], None]:
    """The base rule's checks, plus ``s >= 0``, ``plain`` flags False and ``extra`` (errors
    named by this member's rule)."""

    def check(hp):
        base.check(hp)
        check_min(hp, "s")
        for flag in plain:
            if hp[flag]:
                fail(f"invalid {flag}={hp[flag]!r}: XGrad predicts along the plain step; "
                     "must be False")
        if extra is not None:
            extra(hp)

    return check


def _xgrad(base: UpdateRule, predict: Callable, hp: dict,
           plain: tuple[str, ...] = (), extra: Callable[[dict], None] | None = None
           ) -> UpdateRule:
    """``base`` with weight prediction: its update and fused kernel, ``predict`` and ``s``."""
    return replace(base, hp={**base.hp, **hp, "s": 1.0}, check=_check(base, plain, extra),
                   caps=replace(base.caps, predict=predict))


@register("xgrad_sgd", sample={"weight_decay": 0.05})
def xgrad_sgd() -> UpdateRule:
    return _xgrad(sgd(), _predict_sgd, {"momentum": 0.9},
                  plain=("nesterov", "cautious"),
                  extra=lambda hp: check_min(hp, "momentum", strict=True))


@register("xgrad_adam", sample={"weight_decay": 0.05})
def xgrad_adam() -> UpdateRule:
    return _xgrad(adam(), _predict_adam, {})


@register("xgrad_adamw", sample={"weight_decay": 0.05})
def xgrad_adamw() -> UpdateRule:
    return _xgrad(adamw(), _predict_adam, {}, plain=("cautious",))
