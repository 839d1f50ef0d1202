"""An ill-conditioned quadratic with a known optimum.

    f(x) = 1/2 (x - x*)^T diag(h) (x - x*),   h_i = cond^{-(i / (dim - 1))}  (log-spaced)

so the Hessian's eigenvalues run from 1 down to 1/cond, the minimum is 0 at ``x*``, and
batches add Gaussian noise of scale ``noise`` to the gradient (``x*`` shifted per batch),
making it a stochastic problem when ``noise > 0``.
"""
from __future__ import annotations

import torch

from ..params import ParamInfo
from .base import Task
from .registry import register


@register("quadratic")
class Quadratic(Task):
    name = "quadratic"
    optimum = 0.0

    def __init__(self, dim: int = 64, cond: float = 100.0, noise: float = 0.0, seed: int = 0,
                 device="cpu", dtype=torch.float32):
        super().__init__(device, dtype)
        if dim < 2 or cond < 1:
            raise ValueError(f"quadratic: need dim >= 2 and cond >= 1, got dim={dim}, cond={cond}")
        self.dim, self.noise = dim, noise
        g = torch.Generator().manual_seed(seed)
        exps = torch.arange(dim, dtype=torch.float64) / (dim - 1)
        self.h = (cond ** -exps).to(device=self.device, dtype=dtype)
        self.x_star = torch.randn(dim, generator=g, dtype=torch.float64).to(self.device, dtype)

    @property
    def param_info(self):
        return [ParamInfo("x", "vector", 1, self.dim)]

    def init(self, generator=None):
        return [torch.zeros(self.dim, device=self.device, dtype=self.dtype)]

    def _f(self, x, shift):
        r = x - self.x_star - shift
        return 0.5 * (self.h * r * r).sum()

    def loss(self, params, batch):
        return self._f(params[0], batch)

    def sample_batch(self, generator=None):
        if self.noise == 0:
            return torch.zeros(self.dim, device=self.device, dtype=self.dtype)
        z = torch.randn(self.dim, generator=generator, device=self.device, dtype=self.dtype)
        return self.noise * z / self.h.sqrt()

    def evaluate(self, params):
        with torch.no_grad():
            return {"val_loss": float(self._f(params[0], 0.0))}
