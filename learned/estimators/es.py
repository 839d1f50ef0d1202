"""ES: antithetic truncated evolution strategies (Salimans et al., "Evolution Strategies as a
Scalable Alternative to Reinforcement Learning", 2017; learned_optimization's
``TruncatedES``).

Both particles start from the slot's one stored state, run with ``theta + eps`` and
``theta - eps``; the estimate is ``eps (L+ - L-) / (2 std^2)`` and the positive particle's
state is kept. Biased by truncation (it sees only the current truncation's effect of theta).
"""
from __future__ import annotations

import torch

from ..base import Theta
from ..pool import expand_particles, take_particle
from . import register
from .base import Estimator, SlotEstimate, add_theta, perturbations, stack_thetas
from .pes import antithetic


@register
class ES(Estimator):
    name = "es"
    particles = 1

    def slot_estimates(self, theta: Theta, generator: torch.Generator
                       ) -> dict[int, SlotEstimate | None]:
        eps = perturbations(theta, self.num_tasks, self.std, generator)
        slots = self.pool.slots
        runs = self.pool.run({s: stack_thetas([add_theta(theta, eps[s]),
                                               add_theta(theta, eps[s], -1.0)]) for s in slots},
                             width=2, inners={s: expand_particles(slots[s].inner, 2)
                                              for s in slots})
        out: dict[int, SlotEstimate | None] = {}
        for s, run in runs.items():
            out[s] = antithetic(eps[s], run.values, self.std)
            if not (bool(run.ok.all()) and out[s] is not None):
                out[s] = None
                self.skip(s)
                continue
            self.keep(s, take_particle(run.inner, 0))
        return out
