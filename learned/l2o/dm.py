"""L2O-DM: the coordinatewise LSTM optimizer of Andrychowicz et al. (2016), "Learning to learn
by gradient descent by gradient descent" (NeurIPS).

    features_t = LogAndSign(g_t, k)                       (2 per coordinate)
    o_t, (h, c) = LSTM_2x20(features_t, (h, c))
    delta_t = scale * (W o_t + b)                         x_{t+1} = x_t - delta_t

Defaults: two layers of 20 units and k = 5 as in the paper and Open-L2O's ``train_dm.py``;
``scale`` multiplies the linear read-out (DeepMind's code uses 0.01 for its MLP/MNIST
optimizees; 0.1 here, the step scale MS4L2O gives its black-box LSTM on LASSO). The gradient fed
to the network is detached: the meta-gradient drops second derivatives of the optimizee
(Andrychowicz et al., §2.1).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from ..base import LOpt, Theta
from .lstm import init_linear, init_lstm, linear, lstm, lstm_state
from .preprocess import log_and_sign


class L2ODM(LOpt):
    """Coordinatewise 2-layer LSTM on LogAndSign gradient features (see module docstring).

    Applied to a composite problem ``f + r`` it sees the (sub)gradient of the whole objective
    (``uses_prox = False``)."""

    name = "l2o_dm"
    uses_prox = False

    def __init__(self, hidden: int = 20, layers: int = 2, k: float = 5.0, scale: float = 0.1):
        if hidden < 1 or layers < 1 or k <= 0 or scale <= 0:
            raise ValueError(f"L2ODM: need hidden >= 1, layers >= 1, k > 0, scale > 0; got "
                             f"hidden={hidden}, layers={layers}, k={k}, scale={scale}")
        self.hidden, self.layers, self.k, self.scale = hidden, layers, k, scale

    def init_theta(self, generator: torch.Generator | None = None) -> Theta:
        return {**init_lstm("lstm", 2, self.hidden, self.layers, generator),
                **init_linear("out", self.hidden, 1, generator)}

    def init(self, param: Tensor, info=None) -> dict[str, Tensor]:
        return lstm_state(param.shape, self.hidden, self.layers, param)

    def update(self, theta: Theta, grad: Tensor, param: Tensor, state: Mapping[str, Tensor],
               step, info=None, **ext: Any) -> tuple[Tensor, dict[str, Tensor]]:
        feats = log_and_sign(grad.detach(), self.k)
        out, h, c = lstm(theta, "lstm", feats, state["h"], state["c"])
        delta = self.scale * linear(theta, "out", out).squeeze(-1)
        return delta, {"h": h, "c": c}
