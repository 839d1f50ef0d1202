"""Data hyper-cleaning on digits: half of the training labels are corrupted and every training
example gets a weight ``sigmoid(lam_i)`` (one hyperparameter per example).

    g(W, lam) = sum_i sigmoid(lam_i) CE_i(X W) / n + 1/2 c ||W||^2      (c = 1e-3)
    f(W)      = CE(X_v W)          on clean validation labels

Franceschi et al., "Forward and Reverse Gradient-Based Hyperparameter Optimization" (ICML 2017);
the linear-model setting of the benchopt bilevel benchmark (MNIST there, digits here).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..inner import newton_solve
from .base import BilevelProblem
from .data import corrupt_labels, digits_split
from .logreg import add_bias_column

L2 = 1e-3


class HypercleanDigits(BilevelProblem):
    name = "hyperclean"

    def __init__(self, n_train: int = 300, n_val: int = 300, corruption: float = 0.5, seed: int = 0,
                 dtype: torch.dtype = torch.float64, device="cpu"):
        d = digits_split(n_train, n_val, seed, dtype, device)
        self.x_train = add_bias_column(d["x_train"])
        self.y_train, self.corrupted = corrupt_labels(d["y_train"], corruption, 10, seed)
        self.y_clean = d["y_train"]
        self.x_val, self.y_val = add_bias_column(d["x_val"]), d["y_val"]
        self.x_test, self.y_test = add_bias_column(d["x_test"]), d["y_test"]
        self.n_train, self.n_val, self.dtype = n_train, n_val, dtype

    def inner_loss(self, params, hparams, batch=None):
        (w,) = params
        if batch is None:
            x, y, h = self.x_train, self.y_train, hparams
        else:
            x, y, h = self.x_train[batch], self.y_train[batch], hparams[batch]
        losses = F.cross_entropy(x @ w, y, reduction="none")
        return (torch.sigmoid(h) * losses).mean() + 0.5 * L2 * (w**2).sum()

    def outer_loss(self, params, hparams, batch=None):
        (w,) = params
        x, y = (self.x_val, self.y_val) if batch is None else (self.x_val[batch], self.y_val[batch])
        return F.cross_entropy(x @ w, y)

    def init_params(self):
        return (torch.zeros(self.x_train.shape[1], 10, dtype=self.dtype, device=self.x_train.device),)

    def init_hparams(self):
        return torch.zeros(self.n_train, dtype=self.dtype, device=self.x_train.device)

    def solve(self, hparams, params=None, tol: float = 1e-10):
        start = self.init_params() if params is None else params
        h = hparams.detach()
        return tuple(newton_solve(lambda p: self.inner_loss(p, h), start, tol=tol))

    def test_accuracy(self, params) -> float:
        (w,) = params
        return float(((self.x_test @ w).argmax(1) == self.y_test).double().mean())
