"""Run an L2O model (or a zoo rule) on an :class:`~metaopt.tasks.lasso.L1Composite` problem.

What a model sees depends on its structure: Math-L2O (``uses_prox``) gets ``grad f`` and the
problem's ``l1`` weight and Lipschitz constant (plus ``grad f(z)`` when it uses the B term);
the model-free L2O-DM and RNNprop, like Adam, get the subgradient ``grad f + lam sign x`` of the
whole objective (MS4L2O's ``bp_grad``). Gradients are computed in closed form, so they stay
differentiable in the iterate (what TBPTT meta-training back-propagates through).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from metaopt.rule import UpdateRule, apply, init_states

from ..base import LOpt, Theta


def l2o_step(lopt: LOpt, theta: Theta, problem, x: Tensor, state: Mapping[str, Tensor],
             step: int) -> tuple[Tensor, dict[str, Tensor]]:
    """One update of ``x`` by ``lopt``; returns the new iterate and model state."""
    if getattr(lopt, "uses_prox", False):
        ext = {"l1": problem.lam, "lipschitz": problem.lipschitz}
        if getattr(lopt, "needs_grad_z", False):
            ext["grad_z"] = problem.smooth_grad(state["z"])
        delta, state = lopt.update(theta, problem.smooth_grad(x), x, state, step, None, **ext)
    else:
        delta, state = lopt.update(theta, problem.subgrad(x), x, state, step, None)
    return x - delta, state


@torch.no_grad()
def l2o_objectives(lopt: LOpt, theta: Theta, problem, steps: int) -> Tensor:
    """Objective per iteration ``(steps + 1, instances)`` of ``lopt`` from the problem's x_0."""
    x = problem.init()[0]
    state = lopt.init(x)
    objs = [problem.objective(x)]
    for k in range(1, steps + 1):
        x, state = l2o_step(lopt, theta, problem, x, state, k)
        objs.append(problem.objective(x))
    return torch.stack(objs)


@torch.no_grad()
def rule_objectives(rule: UpdateRule, problem, steps: int) -> Tensor:
    """The same for a hand-written update rule (e.g. ``zoo.rule("adam", lr=...)``) on the
    subgradient of the whole objective."""
    params = problem.init()
    states = init_states(rule, params)
    objs = [problem.objective(params[0])]
    for k in range(1, steps + 1):
        params, states = apply(rule, params, [problem.subgrad(params[0])], states, k)
        objs.append(problem.objective(params[0]))
    return torch.stack(objs)
