"""Sparse (L1-regularised) logistic regression, Math-L2O's second problem (Liu et al. 2023, §5;
MS4L2O ``optimizees/logistic_l1.py``):

    F(x) = f(x) + rho ||x||_1,   f(x) = (1/m) sum_i [log(1 + exp(a_i.x)) - y_i a_i.x]

with ``m = 1000`` samples of ``n = 50`` Gaussian features, labels ``y = 1[A x_true >= 0]`` from a
``sparsity``-sparse Gaussian truth (MS4L2O uses 20), rho = 0.1. ``grad f = A^T (sigmoid(Ax) - y) / m``
is Lipschitz with ``L = ||A||_2^2 / (4 m)`` (sigmoid' <= 1/4); MS4L2O uses ``||A||_2`` instead,
a far more conservative step. Several instances at once, as in :mod:`metaopt.tasks.lasso`.

Out-of-distribution variants (``features=``): ``"gaussian"`` (default), ``"correlated"``
(Toeplitz covariance 0.8^|i-j|, synthetic labels), and real data: ``"digits"`` (standardised 64
pixels of scikit-learn's digits, label ``digit >= 5``, m of the 1797 rows) and ``"breast_cancer"``
(standardised 30 features, malignant/benign label, m of the 569 rows). ``m`` defaults to 1000,
or all 569 rows for breast cancer; for real data ``n`` is the data's feature count.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .lasso import (CORRELATION, L1Composite, _random_rows, _sparse_truth, correlated_rows,
                    sklearn_data, standardized)
from .registry import register

FEATURES = ("gaussian", "correlated", "digits", "breast_cancer")
ROWS = {"digits": 1797, "breast_cancer": 569}


@register("sparse_logreg")
class SparseLogReg(L1Composite):
    name = "sparse_logreg"

    def __init__(self, m: int | None = None, n: int = 50, sparsity: int = 20, rho: float = 0.1,
                 features: str = "gaussian", instances: int = 1, seed: int = 0,
                 device="cpu", dtype=torch.float32):
        super().__init__(device, dtype)
        if m is None:
            m = min(1000, ROWS.get(features, 1000))
        if features not in FEATURES:
            raise ValueError(f"sparse_logreg: unknown features {features!r}; "
                             f"choose one of {', '.join(FEATURES)}")
        if min(m, n, instances) < 1 or not 0 <= sparsity <= n or rho < 0:
            raise ValueError(f"sparse_logreg: need m, n, instances >= 1, 0 <= sparsity <= n, "
                             f"rho >= 0; got m={m}, n={n}, instances={instances}, "
                             f"sparsity={sparsity}, rho={rho}")
        if m > ROWS.get(features, m):
            raise ValueError(f"sparse_logreg: features={features!r} has {ROWS[features]} rows; "
                             f"got m={m}")
        g = torch.Generator().manual_seed(seed)
        A, y = self._generate(features, instances, m, n, sparsity, g)
        self.features, self.lam = features, float(rho)
        self.A = A.to(self.device, dtype)
        self.b = y.to(self.device, dtype)
        lip = torch.linalg.matrix_norm(A, ord=2).pow(2) / (4 * A.shape[1])
        self._lipschitz = lip.to(self.device, dtype)[:, None]

    @staticmethod
    def _generate(features, k, m, n, s, g) -> tuple[Tensor, Tensor]:
        if features in ROWS:
            X, target = sklearn_data(features)
            label = (target >= 5).to(torch.float64) if features == "digits" else target
            idx = _random_rows(X, k, m, g)
            return standardized(X)[idx], label[idx]
        if features == "gaussian":
            A = torch.randn(k, m, n, generator=g, dtype=torch.float64)
        else:
            A = correlated_rows(k, m, n, CORRELATION, g)
        logits = (A @ _sparse_truth(k, n, s, g)[..., None])[..., 0]
        return A, (logits >= 0).to(torch.float64)

    def _logits(self, x: Tensor) -> Tensor:
        return (self.A @ x[..., None])[..., 0]

    def smooth(self, x: Tensor) -> Tensor:
        z = self._logits(x)
        return (torch.logaddexp(torch.zeros_like(z), z) - self.b * z).mean(-1)

    def smooth_grad(self, x: Tensor) -> Tensor:
        r = torch.sigmoid(self._logits(x)) - self.b
        return (self.A.transpose(-1, -2) @ r[..., None])[..., 0] / self.A.shape[1]
