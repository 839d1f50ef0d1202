"""Multinomial logistic regression on the digits: ``z = W x + b``, W (10, 64), b (10).

A convex task (cross-entropy of a linear model; McCullagh & Nelder 1989, ch. 5) on the fixed
split of :mod:`metaopt.tasks.digits_data`; an optional L2 penalty ``l2/2 |W|^2`` makes it
strongly convex. Initialisation: W ~ N(0, 1/64) * ``init_scale``, b = 0.
"""
from __future__ import annotations

import torch

from ..params import ParamInfo
from .digits_data import N_CLASSES, N_PIXELS, DigitsTask
from .registry import register


@register("logreg_digits")
class LogRegDigits(DigitsTask):
    name = "logreg_digits"

    def __init__(self, l2: float = 0.0, init_scale: float = 1.0, seed: int = 0,
                 batch_size: int = 128, device="cpu", dtype=torch.float32):
        if l2 < 0 or init_scale < 0:
            raise ValueError(f"logreg_digits: l2 and init_scale must be >= 0, got {l2!r}, "
                             f"{init_scale!r}")
        super().__init__(batch_size, seed, device, dtype)
        self.l2, self.init_scale = l2, init_scale

    @property
    def param_info(self):
        return [ParamInfo("w", "output", N_PIXELS, N_CLASSES),
                ParamInfo("b", "bias", 1, N_CLASSES)]

    def init(self, generator=None):
        g = self._default_generator(generator)
        w = torch.randn(N_CLASSES, N_PIXELS, generator=g, device=self.device, dtype=self.dtype)
        return [w * (self.init_scale / N_PIXELS**0.5),
                torch.zeros(N_CLASSES, device=self.device, dtype=self.dtype)]

    def logits(self, params, x):
        return x @ params[0].T + params[1]

    def loss(self, params, batch):
        """Mean cross-entropy plus ``l2/2 |W|^2``."""
        return super().loss(params, batch) + 0.5 * self.l2 * (params[0] ** 2).sum()
