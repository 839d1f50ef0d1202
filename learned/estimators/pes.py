"""PES: persistent evolution strategies (Vicol, Metz & Sohl-Dickstein, "Unbiased Gradient
Estimation in Unrolled Computation Graphs with Persistent Evolution Strategies", ICML 2021).

Each slot keeps an antithetic pair of inner trajectories, run with ``theta + eps`` and
``theta - eps`` (fresh ``eps ~ N(0, std^2 I)`` every truncation), and the sum ``xi`` of every
``eps`` since the slot's last reset. The estimate

    g = xi (L+ - L-) / (2 std^2)

is unbiased for the gradient of the Gaussian-smoothed truncation loss *through the whole
unroll so far* (no truncation bias). ``xi`` is this estimator's own state, saved per slot.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..base import Theta
from ..pytree import fill_named, flatten_named
from . import register
from .base import (Estimator, SlotEstimate, add_theta, finite_theta, perturbations,
                   stack_thetas)


@register
class PES(Estimator):
    name = "pes"
    particles = 2  # the antithetic pair keeps separate trajectories
    slot_meta_keys = ("resets", "acc")
    stateful = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.acc: dict[int, Theta] = {}  # perturbations accumulated since each slot's reset

    def slot_estimates(self, theta: Theta, generator: torch.Generator
                       ) -> dict[int, SlotEstimate | None]:
        eps = perturbations(theta, self.num_tasks, self.std, generator)
        runs = self.pool.run({s: stack_thetas([add_theta(theta, eps[s]),
                                               add_theta(theta, eps[s], -1.0)])
                              for s in self.pool.slots}, width=2)
        out: dict[int, SlotEstimate | None] = {}
        for s, run in runs.items():
            xi = add_theta(self.acc[s], eps[s]) if s in self.acc else eps[s]
            out[s] = antithetic(xi, run.values, self.std)
            if not (bool(run.ok.all()) and out[s] is not None):
                out[s] = None
                self.skip(s)
                continue
            self.acc[s] = xi
            self.keep(s, run.inner)
        return out

    def reset(self, s: int) -> None:
        super().reset(s)
        self.acc.pop(s, None)

    def slot_meta(self, s: int) -> dict[str, int]:
        return {**super().slot_meta(s), "acc": int(s in self.acc)}

    def slot_tensors(self, s: int) -> dict[str, Tensor]:
        acc = flatten_named(self.acc[s], "acc") if s in self.acc else {}
        return {**super().slot_tensors(s), **acc}

    def slot_skeleton(self, s: int, meta: dict[str, int], theta: Theta) -> dict[str, Tensor]:
        acc = flatten_named(theta, "acc") if meta.get("acc") else {}
        return {**super().slot_skeleton(s, meta, theta), **acc}

    def load_slot(self, s: int, meta: dict[str, int], tensors: dict[str, Tensor],
                  theta: Theta) -> None:
        super().load_slot(s, meta, tensors, theta)
        self.acc.pop(s, None)
        if meta.get("acc"):
            self.acc[s] = fill_named(theta, tensors, "acc")


def antithetic(xi: Theta, values: Tensor, std: float) -> SlotEstimate | None:
    """``xi (L+ - L-) / (2 std^2)`` and the pair's mean loss; None when not finite."""
    scale = (values[0] - values[1]) / (2 * std * std)
    g = {k: v * scale for k, v in xi.items()}
    return SlotEstimate(g, values.mean()) if finite_theta(g) else None
