"""Per-parameter weight decay for an MLP on digits: one log weight-decay per weight
(64-32-10 MLP: 2410 hyperparameters), the setting of Lorraine et al., "Optimizing Millions of
Hyperparameters by Implicit Differentiation" (AISTATS 2020).

    g(theta, lam) = CE(mlp(X; theta)) + 1/2 sum_i exp(lam_i) theta_i^2
    f(theta)      = CE(mlp(X_v; theta))

The inner problem is non-convex: ``solve`` runs Adam from a fixed initialisation (approximate).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..inner import rule_solve
from .base import BilevelProblem
from .data import digits_split


class MLPWeightDecay(BilevelProblem):
    name = "mlp_wd"
    convex = False

    def __init__(self, hidden: int = 32, n_train: int = 300, n_val: int = 300, seed: int = 0,
                 init_log_wd: float = -6.0, inner_steps: int = 300, dtype: torch.dtype = torch.float64,
                 device="cpu"):
        d = digits_split(n_train, n_val, seed, dtype, device)
        self.x_train, self.y_train, self.x_val, self.y_val = d["x_train"], d["y_train"], d["x_val"], d["y_val"]
        self.n_train, self.n_val, self.dtype, self.hidden = n_train, n_val, dtype, hidden
        self.init_log_wd, self.inner_steps = init_log_wd, inner_steps
        g = torch.Generator().manual_seed(seed + 7)
        shapes = [(64, hidden), (hidden,), (hidden, 10), (10,)]
        fans = [64, 64, hidden, hidden]
        self._theta0 = tuple((torch.randn(s, generator=g, dtype=dtype) / math.sqrt(f)).to(device)
                             for s, f in zip(shapes, fans))

    @staticmethod
    def _logits(params, x):
        w1, b1, w2, b2 = params
        return torch.tanh(x @ w1 + b1) @ w2 + b2

    def _split(self, hparams):
        out, start = [], 0
        for p in self._theta0:
            out.append(hparams[start:start + p.numel()].reshape(p.shape))
            start += p.numel()
        return out

    def inner_loss(self, params, hparams, batch=None):
        x, y = (self.x_train, self.y_train) if batch is None else (self.x_train[batch], self.y_train[batch])
        penalty = sum((h.exp() * p**2).sum() for h, p in zip(self._split(hparams), params))
        return F.cross_entropy(self._logits(params, x), y) + 0.5 * penalty

    def outer_loss(self, params, hparams, batch=None):
        x, y = (self.x_val, self.y_val) if batch is None else (self.x_val[batch], self.y_val[batch])
        return F.cross_entropy(self._logits(params, x), y)

    def init_params(self):
        return self._theta0

    def init_hparams(self):
        n = sum(p.numel() for p in self._theta0)
        return torch.full((n,), self.init_log_wd, dtype=self.dtype, device=self.x_train.device)

    def solve(self, hparams, params=None):
        start = self.init_params() if params is None else params
        h = hparams.detach()
        return tuple(rule_solve(lambda p: self.inner_loss(p, h), start, rule="adam",
                                steps=self.inner_steps, lr=1e-2))
