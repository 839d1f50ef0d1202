"""Linear solvers for the implicit-function-theorem system ``H v = b`` (H symmetric positive
definite: the inner Hessian at a strict local minimum), given only ``matvec(v) = H v``.

A solver is any callable ``solve(matvec, b, **options) -> x`` or ``-> (x, SolveInfo)`` (the
convention of jaxopt's ``solve`` argument); :data:`SOLVERS` names the built-in ones, which
:func:`bilevel.hypergrad` accepts by name as shortcuts (``"cg"``, ``"neumann"``, ``"direct"``).

* :func:`conjugate_gradient` - Hestenes & Stiefel (1952). In exact arithmetic it terminates in at
  most ``n`` steps; its error in the H-norm contracts at least like
  ``2 ((sqrt(kappa) - 1) / (sqrt(kappa) + 1))^k``.
* :func:`neumann` - the truncated Neumann series ``H^{-1} ~ alpha sum_{j=0}^{K} (I - alpha H)^j``
  of Lorraine, Vicol & Duvenaud, "Optimizing Millions of Hyperparameters by Implicit
  Differentiation" (AISTATS 2020, Alg. 3). For ``0 < alpha <= 1/L`` its error is
  ``(I - alpha H)^{K+1} H^{-1} b``, so it decays like ``(1 - alpha mu)^{K+1}``.
* :func:`direct` - ``torch.linalg.solve`` on the materialised matrix (small problems only).

Both iterative solvers are written without Python branching on tensor values: they run a fixed
number of iterations with masked updates (an iterate stops moving once its residual is below
tolerance), so they compose with ``torch.func.vmap`` (each batch member converges on its own) and
``torch.func.jacrev``. Outside any ``torch.func`` transform the CG loop may stop early once every
residual is below tolerance; the result is identical because masked iterations do not move.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

MatVec = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class SolveInfo:
    """What a solve did: ``iterations`` (tensor, per vmapped member), ``matvecs`` (Python int:
    products actually evaluated), recursive ``residual_norm``, and ``converged`` - the solver's
    own test, or ``None`` when convergence is to be judged by the caller from the true relative
    residual ``||H x - b|| / ||b|| <= tol``."""

    iterations: Tensor
    matvecs: int
    residual_norm: Tensor
    converged: Tensor | None
    tol: float = 1e-6


def _outside_transforms() -> bool:
    """True when no torch.func transform is active, so a host sync (``bool(tensor)``) is legal."""
    return torch._C._functorch.peek_interpreter_stack() is None


def default_cg_maxiter(n: int) -> int:
    """``min(n, 1000)`` but at least 100: CG terminates in ``n`` steps in exact arithmetic; in
    floating point an ill-conditioned system can need somewhat more than the ~sqrt(kappa)
    iterations of the bound, and the old fixed 100 stopped short at d = 1000 (issue 18)."""
    return max(100, min(n, 1000))


def conjugate_gradient(matvec: MatVec, b: Tensor, *, tol: float = 1e-10, maxiter: int | None = None,
                       early_stop: bool = True) -> tuple[Tensor, SolveInfo]:
    """Solve ``H x = b`` from ``x0 = 0`` until ``||r|| <= tol ||b||`` or ``maxiter`` products
    (default :func:`default_cg_maxiter` of the system size).

    Each iteration costs one ``matvec``. Updates are masked by ``active = r.r > (tol ||b||)^2``:
    an inactive iterate keeps ``x`` and ``r`` fixed, which is what makes the loop vmappable.
    """
    if maxiter is None:
        maxiter = default_cg_maxiter(b.numel())
    if not isinstance(maxiter, int) or maxiter < 1:
        raise ValueError(f"cg: maxiter={maxiter}; it must be a positive integer")
    if not tol >= 0:
        raise ValueError(f"cg: tol={tol}; it must be >= 0")
    x = torch.zeros_like(b)
    r = b
    p = r
    rs = r @ r
    threshold = (tol * tol) * (b @ b)
    iterations = torch.zeros((), dtype=torch.long, device=b.device)
    matvecs = 0
    for _ in range(maxiter):
        active = rs > threshold
        if early_stop and _outside_transforms() and not bool(active):
            break
        hp = matvec(p)
        matvecs += 1
        curvature = p @ hp
        alpha = torch.where(active, rs / torch.where(active, curvature, torch.ones_like(rs)), 0.0)
        x = x + alpha * p
        r = r - alpha * hp
        rs_new = r @ r
        beta = torch.where(active, rs_new / torch.where(active, rs, torch.ones_like(rs)), 0.0)
        p = r + beta * p
        rs = torch.where(active, rs_new, rs)
        iterations = iterations + active.long()
    info = SolveInfo(iterations, matvecs, rs.sqrt(), rs <= threshold, tol)
    return x, info


def neumann(matvec: MatVec, b: Tensor, *, alpha: float, iters: int = 50,
            tol: float = 1e-6) -> tuple[Tensor, SolveInfo]:
    """``v_K = alpha sum_{j=0}^{K} (I - alpha H)^j b`` with ``K = iters`` matvecs.

    Recursion (Lorraine et al. 2020, Alg. 3): ``p_0 = v_0 = b``; ``v_{j+1} = v_j - alpha H v_j``;
    ``p_{j+1} = p_j + v_{j+1}``; the estimate is ``alpha p_K``. Needs ``alpha <= 1/L`` (``L`` the
    largest eigenvalue of H) to converge. ``tol``: the relative residual judged as converged.
    """
    if not alpha > 0:
        raise ValueError(f"neumann: alpha={alpha}; it must be > 0 (and <= 1/L, L = largest Hessian eigenvalue)")
    if iters < 0:
        raise ValueError(f"neumann: iters={iters}; it must be a non-negative integer")
    v = b
    acc = b
    for _ in range(iters):
        v = v - alpha * matvec(v)
        acc = acc + v
    n = torch.full((), iters, dtype=torch.long, device=b.device)
    nan = torch.full((), float("nan"), dtype=b.dtype, device=b.device)
    return alpha * acc, SolveInfo(n, iters, nan, None, tol)


def direct(matvec: MatVec, b: Tensor, *, tol: float = 1e-8) -> tuple[Tensor, SolveInfo]:
    """Materialise ``H`` from ``n`` vmapped products (rows ``H e_i``, = columns as H is
    symmetric) and ``torch.linalg.solve`` it: exact, small problems only. ``tol``: the relative
    residual judged as converged."""
    eye = torch.eye(b.numel(), dtype=b.dtype, device=b.device)
    x = torch.linalg.solve(torch.func.vmap(matvec)(eye), b)
    n = torch.full((), b.numel(), dtype=torch.long, device=b.device)
    nan = torch.full((), float("nan"), dtype=b.dtype, device=b.device)
    return x, SolveInfo(n, b.numel(), nan, None, tol)


#: the built-in solvers by name (shortcuts accepted by :func:`bilevel.hypergrad`)
SOLVERS = {"cg": conjugate_gradient, "neumann": neumann, "direct": direct}
