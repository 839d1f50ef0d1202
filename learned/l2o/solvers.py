"""Proximal-gradient baselines for ``min f(x) + lam ||x||_1`` on an
:class:`~metaopt.tasks.lasso.L1Composite` problem (any number of instances at once).

ISTA (proximal gradient; Daubechies, Defrise & De Mol 2004):
    x_{k+1} = prox_{a lam ||.||_1}(x_k - a grad f(x_k)),      a = 0.9999 / L
FISTA (Beck & Teboulle 2009, SIAM J. Imaging Sci., eq. 4.1-4.3):
    x_k = prox(y_k - a grad f(y_k)),  t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2,
    y_{k+1} = x_k + ((t_k - 1) / t_{k+1}) (x_k - x_{k-1}),    y_1 = x_0, t_1 = 1
The step 0.9999/L is the one Math-L2O uses (so that its model with neutral coefficients is
exactly this ISTA). Each returns the last iterate and the objective per iteration,
``(steps + 1, instances)``, row 0 being ``x_0``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .math_l2o import STEP_FRACTION


def ista_step(problem, x: Tensor) -> Tensor:
    """One proximal-gradient step from ``x``."""
    a = STEP_FRACTION / problem.lipschitz
    return problem.prox(x - a * problem.smooth_grad(x), a)


@torch.no_grad()
def ista(problem, steps: int, x0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    x = problem.init()[0] if x0 is None else x0
    objs = [problem.objective(x)]
    for _ in range(steps):
        x = ista_step(problem, x)
        objs.append(problem.objective(x))
    return x, torch.stack(objs)


def fista_step(problem, x: Tensor, y: Tensor, t: float) -> tuple[Tensor, Tensor, float]:
    """One FISTA iteration: from the last iterate ``x``, the extrapolated point ``y`` and
    ``t``, the new ``(x, y, t)``."""
    x_new = ista_step(problem, y)
    t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
    return x_new, x_new + ((t - 1) / t_new) * (x_new - x), t_new


@torch.no_grad()
def fista(problem, steps: int, x0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    x = problem.init()[0] if x0 is None else x0
    y, t = x, 1.0
    objs = [problem.objective(x)]
    for _ in range(steps):
        x, y, t = fista_step(problem, x, y, t)
        objs.append(problem.objective(x))
    return x, torch.stack(objs)


def optimal_value(problem, steps: int = 5000) -> Tensor:
    """F* per instance: the best objective over ``steps`` FISTA iterations in float64 (the
    reference of Math-L2O's metric; MS4L2O solves with 5,000 FISTA iterations)."""
    _, objs = fista(problem.cast(torch.float64), steps)
    return objs.min(0).values
