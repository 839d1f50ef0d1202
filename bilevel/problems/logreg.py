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

from ..inner import newton_solve
from .base import BilevelProblem
from .data import digits_split

BIAS_L2 = 1e-4


def add_bias_column(x):
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1)


class LogregDigits(BilevelProblem):
    name = "logreg"

    def __init__(self, n_train: int = 300, n_val: int = 300, seed: int = 0,
                 dtype: torch.dtype = torch.float64, device="cpu"):
        d = digits_split(n_train, n_val, seed, dtype, device)
        self.x_train, self.y_train = add_bias_column(d["x_train"]), d["y_train"]
        self.x_val, self.y_val = add_bias_column(d["x_val"]), d["y_val"]
        self.x_test, self.y_test = add_bias_column(d["x_test"]), d["y_test"]
        self.n_train, self.n_val, self.dtype = n_train, n_val, dtype

    def _penalty(self, w, hparams):
        return 0.5 * (hparams.exp() * (w[:-1] ** 2).sum(1)).sum() + 0.5 * BIAS_L2 * (w[-1] ** 2).sum()

    def inner_loss(self, params, hparams, batch=None):
        (w,) = params
        x, y = (self.x_train, self.y_train) if batch is None else (self.x_train[batch], self.y_train[batch])
        return F.cross_entropy(x @ w, y) + self._penalty(w, hparams)

    def outer_loss(self, params, hparams, batch=None):
        (w,) = params
        x, y = (self.x_val, self.y_val) if batch is None else (self.x_val[batch], self.y_val[batch])
        return F.cross_entropy(x @ w, y)

    def init_params(self):
        return (torch.zeros(self.x_train.shape[1], 10, dtype=self.dtype, device=self.x_train.device),)

    def init_hparams(self):
        return torch.zeros(self.x_train.shape[1] - 1, dtype=self.dtype, device=self.x_train.device)

    def solve(self, hparams, params=None, tol: float = 1e-10):
        start = self.init_params() if params is None else params
        h = hparams.detach()
        return tuple(newton_solve(lambda p: self.inner_loss(p, h), start, tol=tol))

    def test_accuracy(self, params) -> float:
        (w,) = params
        return float(((self.x_test @ w).argmax(1) == self.y_test).double().mean())
