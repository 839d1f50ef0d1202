"""The part shared by the bilevel problems on a linear softmax classifier of digits.

Weights ``W`` are (65, 10): 64 pixel rows and a bias row (features get a constant column); the
outer loss is the validation cross-entropy ``f(W) = CE(X_v W)``; the inner problem is strongly
convex in ``W``, so it is solved by damped Newton to a gradient norm of ``tol``. Subclasses give
the inner loss and the hyperparameters.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..inner import newton_solve
from .base import BilevelProblem
from .data import digits_split


def add_bias_column(x):
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1)


class LinearDigits(BilevelProblem):
    """Digits split (train / validation / test), a bias column, and everything but the inner
    loss and the hyperparameters."""

    def __init__(self, n_train: int, n_val: int, seed: int, dtype: torch.dtype, device):
        d = digits_split(n_train, n_val, seed, dtype, device)
        self.x_train, self.y_train = add_bias_column(d["x_train"]), d["y_train"]
        self.x_val, self.y_val = add_bias_column(d["x_val"]), d["y_val"]
        self.x_test, self.y_test = add_bias_column(d["x_test"]), d["y_test"]
        self.n_train, self.n_val, self.dtype = n_train, n_val, dtype

    def outer_loss(self, params, hparams, batch=None):
        (w,) = params
        x, y = (self.x_val, self.y_val) if batch is None else (self.x_val[batch], self.y_val[batch])
        return F.cross_entropy(x @ w, y)

    def init_params(self):
        return (torch.zeros(self.x_train.shape[1], 10, dtype=self.dtype, device=self.x_train.device),)

    def solve(self, hparams, params=None, tol: float = 1e-10):
        start = self.init_params() if params is None else params
        h = hparams.detach()
        return tuple(newton_solve(lambda p: self.inner_loss(p, h), start, tol=tol))

    def test_accuracy(self, params) -> float:
        (w,) = params
        return float(((self.x_test @ w).argmax(1) == self.y_test).double().mean())
