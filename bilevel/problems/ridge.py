"""Ridge regression with one regularisation weight per feature (closed form).

    g(theta, lam) = ||X theta - y||^2 / (2n) + 1/2 sum_j exp(lam_j) theta_j^2
    f(theta)      = ||X_v theta - y_v||^2 / (2 n_v)
    theta*(lam)   = A^{-1} X^T y / n,          A = X^T X / n + diag(exp(lam))
    dF/dlam       = -exp(lam) * theta* * (A^{-1} X_v^T (X_v theta* - y_v) / n_v)

(the last line: differentiate ``A theta* = X^T y / n``; e.g. Pedregosa, ICML 2016, Sec. 4).
Synthetic data with a sparse ground truth, so per-feature weights matter.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import BilevelProblem


class Ridge(BilevelProblem):
    name = "ridge"

    def __init__(self, n_features: int = 20, n_train: int = 60, n_val: int = 60, noise: float = 0.5,
                 seed: int = 0, dtype: torch.dtype = torch.float64, device="cpu"):
        if n_features < 1 or n_train < 1 or n_val < 1:
            raise ValueError("ridge: n_features, n_train and n_val must be >= 1")
        g = torch.Generator().manual_seed(seed)
        truth = torch.randn(n_features, generator=g, dtype=dtype) * (torch.rand(n_features, generator=g) < 0.5)
        def draw(n):
            x = torch.randn(n, n_features, generator=g, dtype=dtype)
            return x, x @ truth + noise * torch.randn(n, generator=g, dtype=dtype)
        (xt, yt), (xv, yv) = draw(n_train), draw(n_val)
        self.x_train, self.y_train, self.x_val, self.y_val = (t.to(device) for t in (xt, yt, xv, yv))
        self.n_train, self.n_val, self.n_features, self.dtype = n_train, n_val, n_features, dtype

    def inner_loss(self, params, hparams, batch=None):
        (theta,) = params
        x, y = (self.x_train, self.y_train) if batch is None else (self.x_train[batch], self.y_train[batch])
        return 0.5 * ((x @ theta - y) ** 2).mean() + 0.5 * (hparams.exp() * theta**2).sum()

    def outer_loss(self, params, hparams, batch=None):
        (theta,) = params
        x, y = (self.x_val, self.y_val) if batch is None else (self.x_val[batch], self.y_val[batch])
        return 0.5 * ((x @ theta - y) ** 2).mean()

    def init_params(self):
        return (torch.zeros(self.n_features, dtype=self.dtype, device=self.x_train.device),)

    def init_hparams(self):
        return torch.zeros(self.n_features, dtype=self.dtype, device=self.x_train.device)

    def system(self, hparams: Tensor) -> Tensor:
        """``A = X^T X / n + diag(exp(lam))``, the inner Hessian."""
        return self.x_train.T @ self.x_train / self.n_train + torch.diag(hparams.exp())

    def solve(self, hparams, params=None):
        rhs = self.x_train.T @ self.y_train / self.n_train
        return (torch.linalg.solve(self.system(hparams), rhs),)

    def closed_form_hypergrad(self, hparams: Tensor) -> Tensor:
        """``dF/dlam`` from the formula in the module docstring."""
        (theta,) = self.solve(hparams)
        grad_f = self.x_val.T @ (self.x_val @ theta - self.y_val) / self.n_val
        return -hparams.exp() * theta * torch.linalg.solve(self.system(hparams), grad_f)
