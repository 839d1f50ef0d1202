"""LASSO, and the L1-composite problem interface the L2O models use.

    F(x) = f(x) + lam ||x||_1,     f(x) = 1/2 ||A x - b||^2,     L = ||A||_2^2

A task holds ``instances`` independent problems at once (``A`` is ``(k, m, n)``, the parameter
``x`` is ``(k, n)``); its training loss is the sum of their objectives, so the gradient of the
loss is each instance's own gradient. The default distribution is Math-L2O's (Liu et al. 2023,
§5; MS4L2O ``optimizees/lasso.py``): 250 x 500 Gaussian ``A`` with unit-norm columns, a 50-sparse
Gaussian truth ``x_true``, ``b = A x_true (+ noise)``, lam = 0.1.

Out-of-distribution variants (``matrix=``):
  * ``"gaussian"`` (default), ``"rademacher"`` (+-1 entries), ``"correlated"`` (rows drawn with
    Toeplitz covariance ``rho^|i-j|``, rho = 0.8; highly coherent columns): all column-normalised,
    with the synthetic sparse truth;
  * ``"digits"``: real images. The columns of ``A`` are ``n`` random 8x8 digits from
    scikit-learn's digits set (so m = 64), ``b`` another digit image; all unit-norm (sparse
    coding of an image in a dictionary of images, the setting of Math-L2O's BSDS500 test);
  * ``"breast_cancer"``: real features. ``A`` is ``m`` random rows (m <= 569) of the standardised
    30 Wisconsin breast-cancer features (so n = 30), column-normalised; ``b`` the +-1 labels.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor

from ..params import ParamInfo
from .base import Task
from .registry import register

MATRICES = ("gaussian", "rademacher", "correlated", "digits", "breast_cancer")
CORRELATION = 0.8


class L1Composite(Task):
    """``min_x F(x) = f(x) + lam ||x||_1`` for a batch of instances; subclasses define ``f``.

    Interface used by ISTA/FISTA and the L2O models: ``smooth(x)``, ``smooth_grad(x)``,
    ``l1(x)``, ``objective(x)`` (each per instance, shape ``(k,)``, or ``(k, n)`` for the
    gradient), ``subgrad(x)`` (``grad f + lam sign x``), ``prox(v, step)`` (soft-threshold at
    ``lam * step``), ``lam`` and ``lipschitz`` (``(k, 1)``: the Lipschitz constant of ``grad f``
    per instance, shaped to broadcast against ``x``).
    """

    A: Tensor
    b: Tensor
    lam: float
    _lipschitz: Tensor

    @property
    def instances(self) -> int:
        return self.A.shape[0]

    @property
    def dim(self) -> int:
        return self.A.shape[-1]

    @property
    def param_info(self):
        return [ParamInfo("x", "vector", 1, self.instances * self.dim)]

    def smooth(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def smooth_grad(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def lipschitz(self) -> Tensor:
        return self._lipschitz

    def l1(self, x: Tensor) -> Tensor:
        return self.lam * x.abs().sum(-1)

    def objective(self, x: Tensor) -> Tensor:
        return self.smooth(x) + self.l1(x)

    def subgrad(self, x: Tensor) -> Tensor:
        return self.smooth_grad(x) + self.lam * torch.sign(x)

    def prox(self, v: Tensor, step) -> Tensor:
        return torch.sign(v) * torch.relu(v.abs() - self.lam * step)

    def init(self, generator=None) -> list[Tensor]:
        return [torch.zeros(self.instances, self.dim, device=self.device, dtype=self.dtype)]

    def loss(self, params, batch=None) -> Tensor:
        """Sum of the instances' objectives (``batch`` is ignored)."""
        return self.objective(params[0]).sum()

    def sample_batch(self, generator=None):
        """No data: the problem is deterministic. An empty tensor keeps batch trees stackable."""
        return torch.zeros(0, device=self.device, dtype=self.dtype)

    def evaluate(self, params) -> dict[str, float]:
        with torch.no_grad():
            return {"val_loss": float(self.objective(params[0]).mean())}

    def cast(self, dtype: torch.dtype) -> "L1Composite":
        """A copy of these instances with ``A``, ``b`` and L in ``dtype`` (e.g. float64 for a
        reference solve)."""
        new = copy.copy(self)
        new.dtype = dtype
        new.A, new.b, new._lipschitz = (t.to(dtype) for t in (self.A, self.b, self._lipschitz))
        return new


def _unit_columns(A: Tensor) -> Tensor:
    return A / A.norm(dim=-2, keepdim=True).clamp_min(1e-12)


def _sparse_truth(k: int, n: int, s: int, g: torch.Generator) -> Tensor:
    values = torch.randn(k, n, generator=g, dtype=torch.float64)
    keep = torch.rand(k, n, generator=g, dtype=torch.float64).argsort(-1)[:, :s]
    return torch.zeros(k, n, dtype=torch.float64).scatter(1, keep, values.gather(1, keep))


def correlated_rows(k: int, m: int, n: int, rho: float, g: torch.Generator) -> Tensor:
    """``(k, m, n)`` Gaussian rows with covariance ``rho^|i-j|`` (an AR(1) across columns)."""
    z = torch.randn(k, m, n, generator=g, dtype=torch.float64)
    cols = [z[..., 0]]
    for j in range(1, n):
        cols.append(rho * cols[-1] + (1 - rho**2) ** 0.5 * z[..., j])
    return torch.stack(cols, dim=-1)


def standardized(X: Tensor) -> Tensor:
    """Columns centred and scaled to unit variance (constant columns left at zero)."""
    X = X - X.mean(0)
    return X / X.std(0).clamp_min(1e-12)


def sklearn_data(name: str) -> tuple[Tensor, Tensor]:
    """Features and targets of scikit-learn's bundled ``digits`` or ``breast_cancer`` set."""
    from sklearn import datasets

    load = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer}[name]
    data = load()
    return (torch.as_tensor(data.data, dtype=torch.float64),
            torch.as_tensor(data.target, dtype=torch.float64))


def _random_rows(X: Tensor, k: int, m: int, g: torch.Generator) -> Tensor:
    """``(k, m)`` row indices, each a random subset of ``X``'s rows."""
    return torch.stack([torch.randperm(X.shape[0], generator=g)[:m] for _ in range(k)])


@register("lasso")
class Lasso(L1Composite):
    name = "lasso"

    def __init__(self, m: int = 250, n: int = 500, sparsity: int = 50, lam: float = 0.1,
                 noise: float = 0.0, matrix: str = "gaussian", instances: int = 1, seed: int = 0,
                 device="cpu", dtype=torch.float32):
        super().__init__(device, dtype)
        if matrix not in MATRICES:
            raise ValueError(f"lasso: unknown matrix {matrix!r}; choose one of {', '.join(MATRICES)}")
        if min(m, n, instances) < 1 or not 0 <= sparsity <= n or lam < 0 or noise < 0:
            raise ValueError(f"lasso: need m, n, instances >= 1, 0 <= sparsity <= n, lam >= 0, "
                             f"noise >= 0; got m={m}, n={n}, instances={instances}, "
                             f"sparsity={sparsity}, lam={lam}, noise={noise}")
        if matrix == "breast_cancer" and m > 569:
            raise ValueError(f"lasso: matrix='breast_cancer' has 569 rows; got m={m}")
        g = torch.Generator().manual_seed(seed)
        A, b, x_true = self._generate(matrix, instances, m, n, sparsity, noise, g)
        self.matrix, self.lam = matrix, float(lam)
        #: the sparse signal behind ``b`` (None for the real-data variants)
        self.x_true = None if x_true is None else x_true.to(self.device, dtype)
        self.A = A.to(self.device, dtype)
        self.b = b.to(self.device, dtype)
        self._lipschitz = torch.linalg.matrix_norm(A, ord=2).pow(2).to(self.device, dtype)[:, None]

    @staticmethod
    def _generate(matrix, k, m, n, s, noise, g) -> tuple[Tensor, Tensor, Tensor | None]:
        if matrix == "digits":
            X, _ = sklearn_data("digits")
            idx = _random_rows(X, k, n + 1, g)
            imgs = _unit_columns(X[idx].transpose(1, 2))            # (k, 64, n + 1)
            return imgs[..., :n], imgs[..., n], None
        if matrix == "breast_cancer":
            X, y = sklearn_data("breast_cancer")
            idx = _random_rows(X, k, m, g)
            return _unit_columns(standardized(X)[idx]), 2 * y[idx] - 1, None
        if matrix == "gaussian":
            A = torch.randn(k, m, n, generator=g, dtype=torch.float64)
        elif matrix == "rademacher":
            A = torch.randint(0, 2, (k, m, n), generator=g).to(torch.float64) * 2 - 1
        else:
            A = correlated_rows(k, m, n, CORRELATION, g)
        A = _unit_columns(A)
        x_true = _sparse_truth(k, n, s, g)
        b = (A @ x_true[..., None])[..., 0]
        return A, b + noise * torch.randn(b.shape, generator=g, dtype=torch.float64), x_true

    def smooth(self, x: Tensor) -> Tensor:
        r = (self.A @ x[..., None])[..., 0] - self.b
        return 0.5 * (r * r).sum(-1)

    def smooth_grad(self, x: Tensor) -> Tensor:
        r = (self.A @ x[..., None])[..., 0] - self.b
        return (self.A.transpose(-1, -2) @ r[..., None])[..., 0]
