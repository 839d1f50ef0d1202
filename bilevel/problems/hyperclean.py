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

from .data import corrupt_labels
from .linear_digits import LinearDigits

L2 = 1e-3


class HypercleanDigits(LinearDigits):
    name = "hyperclean"

    def __init__(self, n_train: int = 300, n_val: int = 300, corruption: float = 0.5, seed: int = 0,
                 dtype: torch.dtype = torch.float64, device="cpu"):
        super().__init__(n_train, n_val, seed, dtype, device)
        self.y_clean = self.y_train
        self.y_train, self.corrupted = corrupt_labels(self.y_clean, corruption, 10, seed)

    def inner_loss(self, params, hparams, batch=None):
        (w,) = params
        if batch is None:
            x, y, h = self.x_train, self.y_train, hparams
        else:
            x, y, h = self.x_train[batch], self.y_train[batch], hparams[batch]
        losses = F.cross_entropy(x @ w, y, reduction="none")
        return (torch.sigmoid(h) * losses).mean() + 0.5 * L2 * (w**2).sum()

    def init_hparams(self):
        return torch.zeros(self.n_train, dtype=self.dtype, device=self.x_train.device)
