"""RNNprop: Lv, Jiang & Li (2017), "Learning Gradient Descent: Better Generalization and Longer
Horizons" (ICML). The LSTM sees Adam-normalised inputs, which makes it invariant to the
gradient's scale:

    m_t = b1 m + (1 - b1) g,   v_t = b2 v + (1 - b2) g^2,
    m^ = m_t / (1 - b1^t),     v^ = v_t / (1 - b2^t)
    features = (g / (sqrt(v^) + eps),  m^ / (sqrt(v^) + eps))
    o, (h, c) = LSTM_2x20(ELU(W_in features + b_in), (h, c))
    delta = scale * tanh(W_out o + b_out)                 x_{t+1} = x_t - delta

Defaults b1 = b2 = 0.95 and scale 0.1 as in the paper and MS4L2O's ``optimizers/rnnprop.py``.
Network inputs are detached (first-order meta-gradient, as for L2O-DM).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from ..base import LOpt, Theta
from .lstm import init_linear, init_lstm, linear, lstm, lstm_state


class RNNProp(LOpt):
    """Coordinatewise LSTM on Adam-normalised gradient features (see module docstring)."""

    name = "rnnprop"
    uses_prox = False

    def __init__(self, hidden: int = 20, layers: int = 2, beta1: float = 0.95,
                 beta2: float = 0.95, scale: float = 0.1, eps: float = 1e-8):
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1) or hidden < 1 or layers < 1 or scale <= 0:
            raise ValueError(f"RNNProp: need betas in [0, 1), hidden >= 1, layers >= 1, scale > 0;"
                             f" got beta1={beta1}, beta2={beta2}, hidden={hidden}, "
                             f"layers={layers}, scale={scale}")
        self.hidden, self.layers = hidden, layers
        self.beta1, self.beta2, self.scale, self.eps = beta1, beta2, scale, eps

    def init_theta(self, generator: torch.Generator | None = None) -> Theta:
        return {**init_linear("in", 2, self.hidden, generator),
                **init_lstm("lstm", self.hidden, self.hidden, self.layers, generator),
                **init_linear("out", self.hidden, 1, generator)}

    def init(self, param: Tensor, info=None) -> dict[str, Tensor]:
        zero = torch.zeros_like(param)
        return {**lstm_state(param.shape, self.hidden, self.layers, param),
                "m": zero, "v": zero.clone()}

    def features(self, grad: Tensor, state: Mapping[str, Tensor], step
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """The two normalised inputs ``(*, 2)`` and the new moments ``m, v``."""
        g = grad.detach()
        m = self.beta1 * state["m"] + (1 - self.beta1) * g
        v = self.beta2 * state["v"] + (1 - self.beta2) * g * g
        m_hat = m / (1 - self.beta1**step)
        denom = (v / (1 - self.beta2**step)).sqrt() + self.eps
        return torch.stack([g / denom, m_hat / denom], dim=-1), m, v

    def update(self, theta: Theta, grad: Tensor, param: Tensor, state: Mapping[str, Tensor],
               step, info=None, **ext: Any) -> tuple[Tensor, dict[str, Tensor]]:
        feats, m, v = self.features(grad, state, step)
        x = torch.nn.functional.elu(linear(theta, "in", feats))
        out, h, c = lstm(theta, "lstm", x, state["h"], state["c"])
        delta = self.scale * torch.tanh(linear(theta, "out", out).squeeze(-1))
        return delta, {"h": h, "c": c, "m": m, "v": v}
