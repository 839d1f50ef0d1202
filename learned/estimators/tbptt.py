"""TBPTT: truncated backpropagation through time (Williams & Peng 1990; in learned optimizers
as learned_optimization's ``TruncatedGrad``).

``torch.func.grad`` of each slot's truncation meta-loss with respect to ``theta`` (vmapped over
slots), with the inner state detached between truncations. Biased by truncation.
"""
from __future__ import annotations

import torch

from ..base import Theta
from . import register
from .base import Estimator, SlotEstimate, finite_theta


@register
class TBPTT(Estimator):
    name = "tbptt"
    particles = 1

    def slot_estimates(self, theta: Theta, generator: torch.Generator
                       ) -> dict[int, SlotEstimate | None]:
        out: dict[int, SlotEstimate | None] = {}
        for s, run in self.pool.run_grad(theta).items():
            if not (bool(run.ok.all()) and finite_theta(run.grad)):
                out[s] = None
                self.skip(s)
                continue
            out[s] = SlotEstimate(run.grad, run.values.mean())
            self.keep(s, run.inner)
        return out
