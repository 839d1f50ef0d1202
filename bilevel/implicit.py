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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ._tree import flat, leaves_of, unflatten
from .linsolve import conjugate_gradient, dense_solve, neumann

Loss = Callable[[Any, Any], Tensor]

_OPTIONS = {
    "cg": {"tol": 1e-10, "maxiter": 100, "early_stop": True},
    "neumann": {"alpha": None, "iters": 50, "tol": 1e-6},
    "direct": {"tol": 1e-8},
}
METHODS = tuple(_OPTIONS)


@dataclass(frozen=True)
class HypergradInfo:
    """Diagnostics of one hypergradient.

    ``residual_norm`` is the true ``||H v - b||`` at the returned ``v`` and ``relative_residual``
    that over ``||b||``; ``converged`` is CG's own test (``||r|| <= tol ||b||``) for ``cg`` and
    ``relative_residual <= tol`` otherwise; ``iterations`` the solver iterations (a tensor, one
    per vmapped member); ``products`` the Hessian/mixed products evaluated (solver + final);
    ``inner_grad_norm`` is ``||grad_theta g||`` at ``params`` (0 at an exact stationary point).
    """

    method: str
    iterations: Tensor
    products: int
    residual_norm: Tensor
    relative_residual: Tensor
    converged: Tensor
    inner_grad_norm: Tensor
    outer_value: Tensor


def hypergrad(inner_loss: Loss, outer_loss: Loss, params: Any, hparams: Any, method: str = "cg",
              *, return_info: bool = False, check_stationary: float | None = None, **solver: Any):
    """Total derivative of ``outer_loss(params*(hparams), hparams)`` with respect to ``hparams``.

    Args:
      inner_loss, outer_loss: ``(params, hparams) -> scalar``; pure functions (use
        ``torch.func.functional_call`` for an ``nn.Module``).
      params: a tensor or pytree (tuple/list/dict) of tensors at a minimum of ``inner_loss``.
      hparams: a tensor or pytree of tensors; the result has the same structure.
      method: ``"cg"`` (options ``tol`` relative residual, default 1e-10; ``maxiter`` 100;
        ``early_stop``), ``"neumann"`` (``alpha`` <= 1/L required, ``iters`` 50, ``tol`` for the
        converged flag) or ``"direct"`` (materialised Hessian; ``tol`` for the flag).
      return_info: also return a :class:`HypergradInfo`.
      check_stationary: if set, raise ``ValueError`` when ``||grad_theta inner_loss|| > it``.

    Composes with ``torch.func.vmap``/``jacrev``/``grad``. Under ``torch.inference_mode`` it
    raises (torch.func would silently return zeros there).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("bilevel.hypergrad: called under torch.inference_mode, where torch.func "
                           "derivatives are silently zero; call it outside inference_mode "
                           "(torch.no_grad is fine)")
    opts = _solver_options(method, solver)
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

    v, solve_info = _solve(method, opts, hvp, b)
    hv, mixed = pullback(v)
    residual = torch.linalg.vector_norm(flat(hv) - b)
    b_norm = torch.linalg.vector_norm(b)
    relative = residual / torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm))
    result = unflatten([dh - m for dh, m in zip(d_h, mixed)], h_spec)
    if not return_info:
        return result
    converged = solve_info.converged if method == "cg" else relative <= opts["tol"]
    info = HypergradInfo(method, solve_info.iterations, solve_info.matvecs + 1, residual, relative,
                         converged, inner_grad_norm, f_value)
    return result, info


def _solver_options(method: str, solver: dict) -> dict:
    if method not in _OPTIONS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    unknown = sorted(set(solver) - set(_OPTIONS[method]))
    if unknown:
        raise ValueError(f"method {method!r}: unknown option(s) {unknown}; allowed: {sorted(_OPTIONS[method])}")
    opts = {**_OPTIONS[method], **solver}
    if method == "neumann" and opts["alpha"] is None:
        raise ValueError("method 'neumann' needs alpha (0 < alpha <= 1/L, L the largest eigenvalue "
                         "of the inner Hessian)")
    return opts


def _solve(method: str, opts: dict, hvp: Callable[[Tensor], Tensor], b: Tensor):
    if method == "cg":
        return conjugate_gradient(hvp, b, tol=opts["tol"], maxiter=opts["maxiter"],
                                  early_stop=opts["early_stop"])
    if method == "neumann":
        return neumann(hvp, b, alpha=opts["alpha"], iters=opts["iters"])
    eye = torch.eye(b.numel(), dtype=b.dtype, device=b.device)
    hessian = torch.func.vmap(hvp)(eye)  # rows H e_i = columns (H symmetric)
    return dense_solve(hessian, b)


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
