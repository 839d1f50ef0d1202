"""Implicit hypergradients (implicit function theorem).

Let ``theta*(lam)`` be a strict local minimum of the inner loss ``g(theta, lam)`` and
``F(lam) = f(theta*(lam), lam)`` the outer objective. Differentiating ``grad_theta g = 0`` gives
``d theta*/d lam = -H^{-1} d^2g/dtheta dlam`` with ``H = d^2g/dtheta^2``, hence the total derivative

    dF/dlam = d_lam f - (d^2 g / dlam dtheta) v,        where   H v = grad_theta f.

(Bengio 2000; Pedregosa, "Hyperparameter optimization with approximate gradient", ICML 2016;
Lorraine et al., AISTATS 2020.) Every second-order quantity is a product, never a matrix (except
``method="direct"``): the map ``(theta, lam) -> grad_theta g`` is linearised once with
``torch.func.vjp``, and each call of its pullback returns ``(H u, (d^2 g/dlam dtheta) u)`` at the
cost of about one gradient. CG with K iterations therefore costs one outer gradient, one
linearisation, K products and one final product: K + 3 gradient-equivalents (<= 2K + 3), and
the final product also yields the true residual ``H v - b`` for free.

The linear solver is a part passed in (``method``: a callable ``solve(matvec, b, **options)``,
or a name of :data:`bilevel.linsolve.SOLVERS`). A solve that stops before its tolerance is
never silent: it warns :class:`NotConvergedWarning` with the residual (``on_fail="raise"``
raises instead; ``"ignore"`` leaves it to ``info.converged``).
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ._losses import check_loss
from ._tree import flat, leaves_of, unflatten
from .linsolve import SOLVERS, SolveInfo, _outside_transforms

Loss = Callable[[Any, Any], Tensor]
Solver = Callable[..., Any]
METHODS = tuple(SOLVERS)
ON_FAIL = ("warn", "raise", "ignore")


class NotConvergedWarning(RuntimeWarning):
    """A linear solve stopped before its tolerance (the hypergradient is approximate)."""


class NotConvergedError(RuntimeError):
    """Raised instead of :class:`NotConvergedWarning` under ``on_fail="raise"``."""


@dataclass(frozen=True)
class HypergradInfo:
    """Diagnostics of one hypergradient.

    ``residual_norm`` is the true ``||H v - b||`` at the returned ``v`` and ``relative_residual``
    that over ``||b||``; ``converged`` is the solver's own test when it has one (CG:
    ``||r|| <= tol ||b||``) and ``relative_residual <= tol`` otherwise; ``iterations`` the solver
    iterations (a tensor, one per vmapped member); ``products`` the Hessian/mixed products
    evaluated (solver + final); ``inner_grad_norm`` is ``||grad_theta g||`` at ``params``
    (0 at an exact stationary point). ``method`` is the solver's name.
    """

    method: str
    iterations: Tensor
    products: int
    residual_norm: Tensor
    relative_residual: Tensor
    converged: Tensor
    inner_grad_norm: Tensor
    outer_value: Tensor


def hypergrad(inner_loss: Loss, outer_loss: Loss, params: Any, hparams: Any, method: str | Solver = "cg",
              *, return_info: bool = False, check_stationary: float | None = None, on_fail: str = "warn",
              **solver: Any):
    """Total derivative of ``outer_loss(params*(hparams), hparams)`` with respect to ``hparams``.

    Args:
      inner_loss, outer_loss: ``(params, hparams) -> scalar``; pure functions (use
        ``torch.func.functional_call`` for an ``nn.Module``). See :mod:`bilevel._losses`.
      params: a tensor or pytree (tuple/list/dict) of tensors at a minimum of ``inner_loss``.
      hparams: a tensor or pytree of tensors; the result has the same structure.
      method: the linear solver: a callable ``solve(matvec, b, **solver) -> x`` or
        ``-> (x, SolveInfo)``, or a shortcut name: ``"cg"`` (options ``tol`` relative residual,
        default 1e-10; ``maxiter``, default ``max(100, min(n, 1000))``; ``early_stop``),
        ``"neumann"`` (``alpha`` <= 1/L required, ``iters`` 50, ``tol`` 1e-6) or ``"direct"``
        (materialised Hessian; ``tol`` 1e-8). A callable returning a bare ``x`` is judged
        converged at a relative residual <= 1e-6.
      return_info: also return a :class:`HypergradInfo`.
      check_stationary: if set, raise ``ValueError`` when ``||grad_theta inner_loss|| > it``.
      on_fail: ``"warn"`` (default), ``"raise"`` or ``"ignore"`` when the solve did not reach its
        tolerance (checked outside ``vmap``/``jacrev`` only; inside, read ``info.converged``).

    Composes with ``torch.func.vmap``/``jacrev``/``grad``. Under ``torch.inference_mode`` it
    raises (torch.func would silently return zeros there).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("bilevel.hypergrad: called under torch.inference_mode, where torch.func "
                           "derivatives are silently zero; call it outside inference_mode "
                           "(torch.no_grad is fine)")
    solve, name = _solver(method, solver)
    if on_fail not in ON_FAIL:
        raise ValueError(f"on_fail={on_fail!r}; choose one of: {', '.join(ON_FAIL)}")
    check_loss(inner_loss, "inner_loss", batched=False)
    check_loss(outer_loss, "outer_loss", batched=False)
    p_leaves, p_spec = leaves_of(params, "params")
    h_leaves, h_spec = leaves_of(hparams, "hparams")
    inner = _scalar_fn(inner_loss, "inner_loss", p_spec, h_spec)
    outer = _scalar_fn(outer_loss, "outer_loss", p_spec, h_spec)

    (d_p, d_h), f_value = torch.func.grad_and_value(outer, argnums=(0, 1))(p_leaves, h_leaves)
    b = flat(d_p)
    grad_inner = torch.func.grad(inner, argnums=0)
    g_theta, pullback = torch.func.vjp(lambda p, h: flat(grad_inner(p, h)), p_leaves, h_leaves)
    inner_grad_norm = torch.linalg.vector_norm(g_theta)
    if check_stationary is not None:
        _check_stationary(inner_grad_norm, check_stationary)

    def hvp(u: Tensor) -> Tensor:
        return flat(pullback(u)[0])

    v, solve_info = _as_solution(solve(hvp, b, **solver), b)
    hv, mixed = pullback(v)
    residual = torch.linalg.vector_norm(flat(hv) - b)
    b_norm = torch.linalg.vector_norm(b)
    relative = residual / torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm))
    converged = solve_info.converged if solve_info.converged is not None else relative <= solve_info.tol
    _report_failure(on_fail, name, converged, relative, solve_info)
    result = unflatten([dh - m for dh, m in zip(d_h, mixed)], h_spec)
    if not return_info:
        return result
    info = HypergradInfo(name, solve_info.iterations, solve_info.matvecs + 1, residual, relative,
                         converged, inner_grad_norm, f_value)
    return result, info


def _solver(method: str | Solver, options: dict) -> tuple[Solver, str]:
    """The solver callable and its name; unknown names or options are a one-line error."""
    if isinstance(method, str):
        if method not in SOLVERS:
            raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}, "
                             "or pass a callable solve(matvec, b, **options)")
        solve, name = SOLVERS[method], method
    elif callable(method):
        solve, name = method, getattr(method, "__name__", type(method).__name__)
    else:
        raise ValueError(f"method must be a solver name ({', '.join(METHODS)}) or a callable "
                         f"solve(matvec, b, **options); got {type(method).__name__}")
    try:
        params = inspect.signature(solve).parameters
    except (TypeError, ValueError):
        return solve, name
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return solve, name
    allowed = sorted(k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"method {name!r}: unknown option(s) {unknown}; allowed: {allowed}")
    missing = sorted(k for k in allowed if params[k].default is inspect.Parameter.empty and k not in options)
    if missing:
        hint = " (0 < alpha <= 1/L, L the largest eigenvalue of the inner Hessian)" if missing == ["alpha"] else ""
        raise ValueError(f"method {name!r} needs {', '.join(missing)}{hint}")
    return solve, name


def _as_solution(out: Any, b: Tensor) -> tuple[Tensor, SolveInfo]:
    """A solver's result as ``(x, SolveInfo)``; a bare ``x`` gets an info judged by residual."""
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], SolveInfo):
        x, info = out
    else:
        x = out
        nan = torch.full((), float("nan"), dtype=b.dtype, device=b.device)
        info = SolveInfo(torch.zeros((), dtype=torch.long, device=b.device), 0, nan, None)
    if not isinstance(x, Tensor) or x.shape != b.shape:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"the linear solver returned {got}; it must return a tensor shaped like b "
                         f"{tuple(b.shape)} (or (x, SolveInfo))")
    return x, info


def _report_failure(on_fail: str, name: str, converged: Tensor, relative: Tensor, info: SolveInfo) -> None:
    """Warn or raise, with the residual, when the solve stopped short (outside transforms only)."""
    if on_fail == "ignore" or not _outside_transforms() or bool(converged.all()):
        return
    message = (f"bilevel.hypergrad: the {name} solve stopped before its tolerance: relative residual "
               f"{float(relative.max()):.3e} > tol={info.tol:g} after {int(info.iterations.max())} "
               "iterations; the hypergradient is approximate (raise maxiter / iters, or pass "
               "on_fail='ignore')")
    if on_fail == "raise":
        raise NotConvergedError(message)
    warnings.warn(message, NotConvergedWarning, stacklevel=3)


def _scalar_fn(fn: Loss, name: str, p_spec, h_spec) -> Callable:
    """``fn`` on leaf lists, checked to return a scalar tensor (one-line ``ValueError`` if not)."""

    def wrapped(p_leaves, h_leaves):
        try:
            out = fn(unflatten(p_leaves, p_spec), unflatten(h_leaves, h_spec))
        except RuntimeError as err:  # shape mismatches inside the user's loss
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{name}(params, hparams) failed: {first}") from None
        if not isinstance(out, Tensor) or out.dim() != 0:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"{name} must return a scalar tensor; got {shape}")
        return out

    return wrapped


def _check_stationary(grad_norm: Tensor, tol: float) -> None:
    try:
        bad = bool(grad_norm > tol)
    except RuntimeError:
        raise ValueError("check_stationary cannot be evaluated inside torch.func.vmap; "
                         "check the inner solution before vmapping") from None
    if bad:
        raise ValueError(f"params are not a stationary point of inner_loss: ||grad_params|| = "
                         f"{float(grad_norm):.3e} > check_stationary={tol:g}; solve the inner "
                         "problem further")
