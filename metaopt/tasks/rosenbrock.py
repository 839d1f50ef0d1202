"""The N-dimensional Rosenbrock function (Rosenbrock 1960, the chained form):

    f(x) = sum_{i=1}^{N-1} w_i [ 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2 ]

Its minimum is 0 at x = (1, ..., 1), at the end of a long curved valley. With ``noise > 0`` each
batch draws positive weights w_i ~ Uniform(1 - noise, 1 + noise) (else w_i = 1), a stochastic
objective whose every sample keeps the optimum 0 at the ones vector. Parameters start at the
classic point (-1.2, 1, -1.2, 1, ...) plus ``init_scale`` times standard Gaussian noise.
"""
from __future__ import annotations

import torch

from ..params import ParamInfo
from .base import Task
from .registry import register


@register("rosenbrock")
class Rosenbrock(Task):
    name = "rosenbrock"
    optimum = 0.0

    def __init__(self, dim: int = 10, noise: float = 0.0, init_scale: float = 0.1, seed: int = 0,
                 device="cpu", dtype=torch.float32):
        super().__init__(device, dtype)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"rosenbrock: dim must be an integer >= 2, got {dim!r}")
        if not 0 <= noise < 1:
            raise ValueError(f"rosenbrock: noise must be in [0, 1), got {noise!r}")
        if init_scale < 0:
            raise ValueError(f"rosenbrock: init_scale must be >= 0, got {init_scale!r}")
        self.dim, self.noise, self.init_scale, self.seed = dim, noise, init_scale, seed
        self._batch_gen = self.generator(seed + 1)

    @property
    def param_info(self):
        return [ParamInfo("x", "vector", 1, self.dim)]

    def init(self, generator=None):
        g = generator if generator is not None else self.generator(self.seed)
        start = torch.tensor([-1.2, 1.0], dtype=self.dtype, device=self.device).repeat(self.dim)
        z = torch.randn(self.dim, generator=g, device=self.device, dtype=self.dtype)
        return [start[: self.dim] + self.init_scale * z]

    @staticmethod
    def _f(x, w):
        return (w * (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)).sum()

    def loss(self, params, batch):
        """The weighted Rosenbrock sum; ``batch`` is the weight vector w (length dim - 1)."""
        return self._f(params[0], batch)

    def sample_batch(self, generator=None):
        ones = torch.ones(self.dim - 1, device=self.device, dtype=self.dtype)
        if self.noise == 0:
            return ones
        g = generator if generator is not None else self._batch_gen
        u = torch.rand(self.dim - 1, generator=g, device=self.device, dtype=self.dtype)
        return ones + self.noise * (2 * u - 1)

    def evaluate(self, params):
        """The noiseless objective (all weights 1)."""
        with torch.no_grad():
            x = params[0]
            return {"val_loss": float(self._f(x, torch.ones_like(x[1:])))}
