"""``SGDMLOpt``: heavy-ball SGD whose learning rate and momentum are the meta-parameters.

    lr = exp(theta["log_lr"]),   mu = sigmoid(theta["logit_momentum"])
    m_t = mu m_{t-1} + g_t,      delta_t = lr m_t

The smallest useful learned optimizer (two numbers, one state tensor): a baseline for
meta-training (hyperparameter learning by PES / TBPTT, as in Vicol et al. 2021, Sec. 5) and a
smooth toy for checking meta-gradient estimators against exact gradients.
"""
from __future__ import annotations

import math

import torch

from .base import LOpt, Theta


class SGDMLOpt(LOpt):
    """Heavy-ball SGD with learned ``log_lr`` and ``logit_momentum`` (0-d tensors)."""

    name = "sgdm_lopt"

    def __init__(self, lr: float = 1e-2, momentum: float = 0.5):
        if not lr > 0 or not 0 < momentum < 1:
            raise ValueError(f"SGDMLOpt: need lr > 0 and 0 < momentum < 1, got {lr}, {momentum}")
        self.lr, self.momentum = lr, momentum

    def init_theta(self, generator: torch.Generator | None = None) -> Theta:
        logit = math.log(self.momentum / (1 - self.momentum))
        return {"log_lr": torch.tensor(math.log(self.lr)), "logit_momentum": torch.tensor(logit)}

    def init(self, param, info=None):
        return {"m": torch.zeros_like(param)}

    def update(self, theta, grad, param, state, step, info=None, **ext):
        mu = torch.sigmoid(theta["logit_momentum"]).to(grad.dtype)
        m = mu * state["m"] + grad
        return theta["log_lr"].exp().to(grad.dtype) * m, {"m": m}
