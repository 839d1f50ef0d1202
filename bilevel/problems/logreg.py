"""Multinomial logistic regression on digits with one L2 weight per input feature.

    g(W, lam) = CE(X W) + 1/2 sum_j exp(lam_j) ||W_j||^2 + 1/2 c ||b||^2     (64 hyperparameters)
    f(W)      = CE(X_v W)

``W`` is (65, 10): 64 feature rows and a bias row (``c`` = 1e-4 keeps the bias strongly convex;
softmax is invariant to a common shift of the logits). The per-feature setting of Grazzi et al.
(ICML 2020) and Pedregosa (ICML 2016).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .linear_digits import LinearDigits

BIAS_L2 = 1e-4


class LogregDigits(LinearDigits):
    name = "logreg"

    def __init__(self, n_train: int = 300, n_val: int = 300, seed: int = 0,
                 dtype: torch.dtype = torch.float64, device="cpu"):
        super().__init__(n_train, n_val, seed, dtype, device)

    def _penalty(self, w, hparams):
        return 0.5 * (hparams.exp() * (w[:-1] ** 2).sum(1)).sum() + 0.5 * BIAS_L2 * (w[-1] ** 2).sum()

    def inner_loss(self, params, hparams, batch=None):
        (w,) = params
        x, y = (self.x_train, self.y_train) if batch is None else (self.x_train[batch], self.y_train[batch])
        return F.cross_entropy(x @ w, y) + self._penalty(w, hparams)

    def init_hparams(self):
        return torch.zeros(self.x_train.shape[1] - 1, dtype=self.dtype, device=self.x_train.device)
