"""A safeguarded L2O model: the learned iterate is kept only while it beats the classical
method's, so the classical guarantee holds whatever the model does.

Safeguarding follows Heaton, Chen, Wang & Yin (2023), "Safeguarded learned convex optimization"
(AAAI; arXiv 2003.01880): accept the L2O update while a merit shows it is good, otherwise take
the update of a convergent classical method. Here the merit is the objective
``F = f + lam ||.||_1`` itself and the comparison is with the classical method's *own* iterate,
run alongside (Heaton et al. compare the fixed-point residual with a moving threshold and fall
back to one step of an averaged operator, which keeps convergence but no rate):

    fallback:  x^F_k = T(y_k),   y_{k+1} = x^F_k + ((t_k - 1) / t_{k+1}) (x^F_k - x^F_{k-1})
               (FISTA, Beck & Teboulle 2009; ISTA: y_{k+1} = x^F_k),
               T(y) = prox_{a r}(y - a grad f(y)),  t_1 = 1,  t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2
    model:     p_k = L2O step from (p_{k-1}, grad f(p_{k-1}), model state)
    output:    x_k = p_k            if F(p_k) <= F(x^F_k)     (learned step accepted)
               x_k = x^F_k          otherwise                 (safeguard fires: the model
                                                               restarts from x^F_k)

with ``a = 0.9999 / L`` and ``x_0 = p_0 = y_1 = x^F_0``. The fallback sequence never sees the
model (it never restarts), so it is exactly ISTA / FISTA (``learned.l2o.ista`` / ``fista``), and

    **Guarantee.** For every k and every model (trained, untrained or divergent):
        F(x_k) <= F(x^F_k),
    hence with FISTA (Beck & Teboulle 2009, SIAM J. Imaging Sci., Thm 4.4; step a <= 1/L)
        F(x_k) - F* <= 2 ||x_0 - x*||^2 / (a (k + 1)^2),
    and with ISTA (ibid., Thm 3.1)  F(x_k) - F* <= ||x_0 - x*||^2 / (2 a k).

The restart rule is the model's: when its iterate loses, it continues from the fallback's
(for Math-L2O its prox-output state ``z`` is reset too, dropping its momentum; its LSTM state is
kept with ``restart="keep"``, re-initialised with ``restart="fresh"``). Decisions are per problem
instance (the leading axes of the iterate; the objective's shape).

Cost per iteration: the model's step (one ``grad f`` and the network) plus the fallback's (one
``grad f`` and a prox) and two objective values; ``experiments/l2o_safe.py`` measures it.

Functional use: :meth:`Safeguarded.init` / :meth:`Safeguarded.step` /
:meth:`Safeguarded.objectives` on an :class:`~metaopt.tasks.lasso.L1Composite` problem; as a
torch optimizer: :class:`learned.l2o.safeguard_optim.SafeguardedOptimizer` (needs a closure).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from ..base import LOpt, Theta
from .run import l2o_step
from .solvers import fista_step, ista_step

FALLBACKS = ("fista", "ista")
RESTARTS = ("keep", "fresh")


class Safeguarded:
    """``lopt`` (an L2O model of the :class:`~learned.base.LOpt` interface) safeguarded by
    ``fallback`` (``"fista"`` or ``"ista"``); see the module docstring for the rule and its
    guarantee."""

    def __init__(self, lopt: LOpt, fallback: str = "fista", restart: str = "keep"):
        if not isinstance(lopt, LOpt):
            raise ValueError(f"Safeguarded: lopt must be a learned.LOpt, got {type(lopt).__name__}")
        if fallback not in FALLBACKS or restart not in RESTARTS:
            raise ValueError(f"Safeguarded: fallback must be one of {FALLBACKS} and restart one "
                             f"of {RESTARTS}; got fallback={fallback!r}, restart={restart!r}")
        self.lopt, self.fallback, self.restart = lopt, fallback, restart
        self.name = f"safeguarded_{lopt.name}"

    def init_theta(self, generator: torch.Generator | None = None) -> Theta:
        return self.lopt.init_theta(generator)

    def check_theta(self, theta: Mapping[str, Tensor]) -> Theta:
        return self.lopt.check_theta(theta)

    def init(self, x: Tensor) -> dict:
        """State at ``x_0``: the output ``x`` and its objective ``fx``, the fallback's
        ``(x, y, t)``, the model's point and state, and ``accepted`` (whether the last output
        was the model's)."""
        return {"x": x, "fx": None, "fb_x": x, "fb_y": x, "fb_t": 1.0, "p": x,
                "model": self.lopt.init(x), "accepted": None}

    def step(self, theta: Theta, problem, state: Mapping, k: int) -> dict:
        """Iteration ``k >= 1``: the new state; ``state["x"]`` is the safeguarded iterate and
        ``state["accepted"]`` says, per instance, whether it is the model's."""
        if self.fallback == "fista":
            fb_x, fb_y, fb_t = fista_step(problem, state["fb_x"], state["fb_y"], state["fb_t"])
        else:
            fb_x = fb_y = ista_step(problem, state["fb_x"])
            fb_t = 1.0
        p, model = l2o_step(self.lopt, theta, problem, state["p"], state["model"], k)
        f_model, f_fb = problem.objective(p), problem.objective(fb_x)
        accepted = f_model <= f_fb                                   # False for nan / inf
        p = torch.where(_expand(accepted, p), p, fb_x)
        return {"x": p, "fx": torch.where(accepted, f_model, f_fb), "fb_x": fb_x, "fb_y": fb_y,
                "fb_t": fb_t, "p": p, "model": self.restarted(model, fb_x, accepted),
                "accepted": accepted}

    def restarted(self, model: Mapping[str, Tensor], x: Tensor, keep: Tensor
                  ) -> dict[str, Tensor]:
        """The model state where ``keep`` (per instance), else the state restarted at ``x``."""
        if bool(keep.all()):
            return dict(model)
        if self.restart == "fresh":
            fresh = self.lopt.init(x)
        else:
            fresh = {**model, **{key: x for key in getattr(self.lopt, "iterate_state", ())}}
        return {key: torch.where(_expand(keep, v), v, fresh[key]) for key, v in model.items()}

    @torch.no_grad()
    def objectives(self, theta: Theta, problem, steps: int) -> tuple[Tensor, Tensor]:
        """Objective per iteration ``(steps + 1, instances)`` from the problem's ``x_0``, and
        whether each step was the model's ``(steps, instances)``."""
        state = self.init(problem.init()[0])
        objs, accepted = [problem.objective(state["x"])], []
        for k in range(1, steps + 1):
            state = self.step(theta, problem, state, k)
            objs.append(state["fx"])
            accepted.append(state["accepted"])
        return torch.stack(objs), torch.stack(accepted)


def _expand(mask: Tensor, like: Tensor) -> Tensor:
    """``mask`` (the objective's shape, a prefix of ``like``'s) with trailing unit axes."""
    return mask.reshape(mask.shape + (1,) * (like.dim() - mask.dim()))
