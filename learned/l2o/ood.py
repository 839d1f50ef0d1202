"""More out-of-distribution L2O problems, built from data that ships offline (scikit-learn's
bundled sets and generators) and from ill-conditioned Gaussian designs.

They are LASSO and sparse logistic-regression instances of the same
:class:`~metaopt.tasks.lasso.L1Composite` interface as ``metaopt.tasks`` ``lasso`` /
``sparse_logreg`` (whose own variants are ``rademacher``, ``correlated``, ``digits``,
``breast_cancer``), made by :func:`lasso_ood` and :func:`sparse_logreg_ood`:

* ``"diabetes"``: the 10 standardised features of scikit-learn's diabetes set (442 patients);
  LASSO target the standardised disease progression, logistic label ``progression > median``;
* ``"wine"``: the 13 standardised features of the wine set (178 wines); LASSO target the
  standardised cultivar index, logistic label ``cultivar == 0``;
* ``"covtype_like"``: a synthetic stand-in for the covertype set (54 columns: 10 standardised
  continuous ones and 44 sparse 0/1 indicators, like its soil and wilderness columns), from
  ``sklearn.datasets.make_classification`` (informative, redundant and noisy features, 5% label
  noise); LASSO target ``2 y - 1``;
* ``"cond1e2"``, ``"cond1e4"``, ``"cond1e6"``: Gaussian designs with condition number kappa:
  LASSO ``A = U diag(s) V^T`` (250 x 500, Haar-random U, V, singular values log-spaced from 1 to
  1/kappa, scaled to mean unit column norm) with Math-L2O's 50-sparse truth; logistic
  ``A = G diag(s)`` (1000 x 50, column scales log-spaced from 1 to 1/kappa, scaled so
  ``||A||_F^2 = m n``) with labels from a 20-sparse truth.

LASSO designs are column-normalised like ``metaopt.tasks.lasso`` (except ``cond*``, where that
would undo the conditioning); the smooth part, L and the prox are the task classes' own.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from metaopt.tasks.lasso import (L1Composite, Lasso, _random_rows, _sparse_truth, _unit_columns,
                                 standardized)
from metaopt.tasks.sparse_logreg import SparseLogReg

VARIANTS = ("diabetes", "wine", "covtype_like", "cond1e2", "cond1e4", "cond1e6")
ROWS = {"diabetes": 442, "wine": 178}
COVTYPE_CONTINUOUS, COVTYPE_BINARY = 10, 44


def _sklearn_xy(name: str) -> tuple[Tensor, Tensor]:
    from sklearn import datasets

    data = {"diabetes": datasets.load_diabetes, "wine": datasets.load_wine}[name]()
    return (torch.as_tensor(data.data, dtype=torch.float64),
            torch.as_tensor(data.target, dtype=torch.float64))


def covtype_like(m: int, seed: int) -> tuple[Tensor, Tensor]:
    """``(m, 54)`` covertype-like features (10 standardised continuous, 44 0/1 indicators, each
    on for a random 2-20% of the rows) and 0/1 labels."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=m, n_features=COVTYPE_CONTINUOUS + COVTYPE_BINARY,
                               n_informative=12, n_redundant=20, flip_y=0.05, class_sep=2.0,
                               random_state=seed)
    X, y = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    raw = X[:, COVTYPE_CONTINUOUS:]
    rate = 0.02 + 0.18 * torch.rand(COVTYPE_BINARY, generator=g, dtype=torch.float64)
    cut = torch.stack([torch.quantile(raw[:, j], 1 - rate[j]) for j in range(COVTYPE_BINARY)])
    binary = (raw >= cut).double()
    return torch.cat([standardized(X[:, :COVTYPE_CONTINUOUS]), binary], dim=1), y


def kappa(name: str) -> float:
    """The condition number of a ``cond1eK`` variant."""
    return 10.0 ** int(name[len("cond1e"):])


def _log_spaced(count: int, cond: float) -> Tensor:
    return torch.logspace(0, -math.log10(cond), count, dtype=torch.float64)


def _haar(rows: int, cols: int, g: torch.Generator) -> Tensor:
    """``(rows, cols)`` with orthonormal columns, Haar-distributed (QR of a Gaussian, signs
    fixed)."""
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _with_data(cls, A: Tensor, b: Tensor, lam: float, lipschitz: Tensor, variant: str,
               device, dtype) -> L1Composite:
    """An instance of the task class ``cls`` holding the given data (``cls``'s own ``smooth``,
    ``smooth_grad``, ``prox``; its constructor, which draws data, is not run)."""
    task = cls.__new__(cls)
    L1Composite.__init__(task, device, dtype)
    task.A, task.b = A.to(task.device, dtype), b.to(task.device, dtype)
    task.lam, task._lipschitz = float(lam), lipschitz.to(task.device, dtype)[:, None]
    task.variant = variant
    return task


def _stacked(one, instances: int) -> tuple[Tensor, Tensor]:
    """``one(i)``'s design and target for ``i < instances``, stacked on a new leading axis."""
    pairs = [one(i) for i in range(instances)]
    return torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])


def _check(kind: str, variant: str, allowed, instances: int, m: int | None, n: int):
    if variant not in allowed:
        raise ValueError(f"{kind}: unknown OOD variant {variant!r}; choose one of "
                         f"{', '.join(allowed)}")
    if instances < 1 or n < 1 or (m is not None and m < 2):
        raise ValueError(f"{kind}: need instances >= 1, m >= 2 and n >= 1; got "
                         f"instances={instances}, m={m}, n={n}")


def lasso_ood(variant: str, instances: int = 1, seed: int = 0, lam: float = 0.1,
              m: int | None = None, n: int = 500, device="cpu", dtype=torch.float32) -> Lasso:
    """``instances`` LASSO problems of ``variant`` (see the module docstring); ``m`` rows
    (default 200 for diabetes, 150 for wine, else 250; capped at the data's rows) and, for
    ``cond*``, ``n`` columns."""
    _check("lasso_ood", variant, VARIANTS, instances, m, n)
    g = torch.Generator().manual_seed(seed)

    def one(i: int) -> tuple[Tensor, Tensor]:
        if variant in ROWS:
            X, y = _sklearn_xy(variant)
            idx = _random_rows(X, 1, min(m or min(200, ROWS[variant] - 28), ROWS[variant]),
                               g)[0]
            return _unit_columns(standardized(X)[idx]), standardized(y[:, None])[idx, 0]
        if variant == "covtype_like":
            X, y = covtype_like(m or 250, seed * 1000 + i)
            return _unit_columns(X), 2 * y - 1
        rows = min(m or 250, n)
        A = (_haar(rows, rows, g) @ torch.diag(_log_spaced(rows, kappa(variant)))
             @ _haar(n, rows, g).T)
        A = A * (n ** 0.5 / A.norm())
        return A, A @ _sparse_truth(1, n, max(n // 10, 1), g)[0]

    A, b = _stacked(one, instances)
    lip = torch.linalg.matrix_norm(A, ord=2).pow(2)
    return _with_data(Lasso, A, b, lam, lip, variant, device, dtype)


def sparse_logreg_ood(variant: str, instances: int = 1, seed: int = 0, rho: float = 0.1,
                      m: int | None = None, n: int = 50, device="cpu", dtype=torch.float32
                      ) -> SparseLogReg:
    """``instances`` sparse logistic-regression problems of ``variant`` (module docstring);
    ``m`` samples (default: all rows but 28 of a real data set, else 1000) and, for ``cond*``,
    ``n`` features."""
    _check("sparse_logreg_ood", variant, VARIANTS, instances, m, n)
    g = torch.Generator().manual_seed(seed)

    def one(i: int) -> tuple[Tensor, Tensor]:
        if variant in ROWS:
            X, t = _sklearn_xy(variant)
            label = (t > t.median()).double() if variant == "diabetes" else (t == 0).double()
            idx = _random_rows(X, 1, min(m or ROWS[variant] - 28, ROWS[variant]), g)[0]
            return standardized(X)[idx], label[idx]
        if variant == "covtype_like":
            return covtype_like(m or 1000, seed * 1000 + i)
        rows = m or 1000
        A = torch.randn(rows, n, generator=g, dtype=torch.float64) * _log_spaced(n, kappa(variant))
        A = A * ((rows * n) ** 0.5 / A.norm())
        return A, (A @ _sparse_truth(1, n, max(2 * n // 5, 1), g)[0] >= 0).double()

    A, y = _stacked(one, instances)
    lip = torch.linalg.matrix_norm(A, ord=2).pow(2) / (4 * A.shape[1])
    return _with_data(SparseLogReg, A, y, rho, lip, variant, device, dtype)
