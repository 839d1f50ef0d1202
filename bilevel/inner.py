"""Inner solvers: damped Newton for the strongly convex inner problems (to a gradient norm of
1e-10 and below in float64), and plain steps of any zoo rule for the rest."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from metaopt import zoo
from metaopt.rule import init_states, apply

from ._tree import flat, split_like


def newton_solve(loss: Callable[[list[Tensor]], Tensor], params: Sequence[Tensor], *,
                 tol: float = 1e-10, maxiter: int = 50) -> list[Tensor]:
    """Minimise a smooth strongly convex ``loss(params)`` by Newton's method with Armijo
    backtracking (Nocedal & Wright, Alg. 3.1 with the Newton direction) until
    ``||grad|| <= tol``. The Hessian is materialised (rows are vmapped Hessian-vector products of
    one linearised gradient, much faster than forward-over-reverse): small problems only.
    Raises ``RuntimeError`` when ``maxiter`` steps do not reach ``tol``."""
    like = [p.detach() for p in params]
    x = flat(like)

    def f(v: Tensor) -> Tensor:
        return loss(split_like(v, like))

    grad_and_value = torch.func.grad_and_value(f)
    eye = torch.eye(x.numel(), dtype=x.dtype, device=x.device)

    def hessian(v: Tensor) -> Tensor:
        _, pullback = torch.func.vjp(torch.func.grad(f), v)
        return torch.func.vmap(pullback)(eye)[0]
    with torch.no_grad():
        for _ in range(maxiter):
            g, value = grad_and_value(x)
            if float(torch.linalg.vector_norm(g)) <= tol:
                return split_like(x, like)
            step = torch.linalg.solve(hessian(x), g)
            t, slope = 1.0, float(g @ step)
            # near the optimum the predicted decrease drops below f's rounding error, where
            # Armijo's test is noise: take the full (quadratically convergent) Newton step
            noise = 1e-13 * (1.0 + abs(float(value)))
            while slope > noise and t > 1e-10 and float(f(x - t * step)) > float(value) - 1e-4 * t * slope:
                t *= 0.5
            x = x - t * step
        g = torch.func.grad(f)(x)
    norm = float(torch.linalg.vector_norm(g))
    if norm > tol:
        raise RuntimeError(f"newton_solve: ||grad|| = {norm:.3e} > tol={tol:g} after {maxiter} steps")
    return split_like(x, like)


def rule_solve(loss: Callable[[list[Tensor]], Tensor], params: Sequence[Tensor], *,
               rule: str = "adam", steps: int = 500, **hp) -> list[Tensor]:
    """``steps`` full-batch steps of the zoo rule ``rule`` (non-convex inner problems)."""
    r = zoo.rule(rule, **hp)
    ps = [p.detach() for p in params]
    states = init_states(r, ps)
    grad = torch.func.grad(lambda q: loss(list(q)))
    with torch.no_grad():
        for k in range(steps):
            ps, states = apply(r, ps, list(grad(tuple(ps))), states, k + 1)
    return ps
