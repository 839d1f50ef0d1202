"""M-FAC, dense (Frantar, Kurtic & Alistarh, "M-FAC: Efficient Matrix-Free Approximations of
Second-Order Information", NeurIPS 2021, arXiv 2107.03356; official code: IST-DASLab/M-FAC
``optim.py``, classes ``HInvFastUpMulti`` (the dynamic algorithm) and ``MFAC`` (the optimizer)).

Preconditioned SGD with the inverse of the damped empirical Fisher of the last ``m`` gradients,
applied without ever forming a ``d x d`` matrix:

    x_t  = g_t + wd p_t                                   (coupled L2, before preconditioning)
    G_t  = the ring buffer of the last m x's (m x d; row (t - 1) mod m replaced by x_t;
           rows not yet written are zero)
    F_t  = damp I + (1/m) G_t^T G_t                       (1/m even before the window is full:
                                                           F^{-1} = 1/damp on the complement)
    u_t  = F_t^{-1} x_t
    v_t  = mu v_{t-1} + (1 - mu) u_t,  v_0 = 0            (only when mu > 0; else v_t = u_t)
    p_t  = p_{t-1} - lr v_t

The inverse-Fisher product is the paper's dynamic algorithm. With lam = 1/damp, H_0^{-1} = lam I
and the Sherman-Morrison recursion over the rows g_1..g_m of G (in ring-buffer slot order),

    H_i^{-1} = H_{i-1}^{-1} - H_{i-1}^{-1} g_i g_i^T H_{i-1}^{-1} / (m + g_i^T H_{i-1}^{-1} g_i),

the paper keeps the Gram matrix GG^T (one row and column refreshed per step, O(md)) and, each
time the oldest gradient is replaced, rebuilds the m x m matrices D_ij = g_i^T H_{i-1}^{-1} g_j
(j >= i), the denominators m + D_ii and the coefficients B (H_{i-1}^{-1} g_i = sum_j B_ij g_j).
Eliminating the recursion row by row is Gaussian elimination without pivoting of the positive
definite lam GG^T + m I, whose U factor is D + m I (the official code takes an LU factorization);
here its Cholesky factor L (l = diag L) gives the same numbers: D + m I = diag(l) L^T,
m + D_ii = l_i^2, and with the unit lower triangle A = L diag(l)^{-1}

    q = A^{-1} (lam G x)              (q_i = g_i^T H_{i-1}^{-1} x, the paper's O(m^2) recursion)
    B = lam A^{-1}
    F^{-1} x = lam x - G^T B^T (q / (m + diag D)).

B enters only through ``B^T (q / ...)``, a second triangular solve, so it is never formed. Each
step costs O(md) for the two products with G plus O(m^3) for the factorization, as in the paper.

Departures: the official optimizer preconditions all parameters as one vector; an update rule
sees one tensor at a time, so this is the block-wise (block-diagonal Fisher) variant that the
paper discusses (the official pruner, ``prun.py``, implements blocks), with one block per tensor;
it equals the official optimizer for a model with a single tensor. ``weight_decay`` is per param group here (the official class takes one value).
The window, Gram matrix and momentum buffer are kept in float32 for bf16/fp16 parameters (the
official code keeps float32 gradients); they are created on the first update.

Defaults (official code): lr 1e-3, momentum 0, weight_decay 0, ngrads (m) 1024, damp 1e-5.
State per tensor: ``grads`` (m x numel), ``dots`` (m x m), ``momentum_buffer`` when mu > 0.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..capabilities import Capabilities
from ..helpers import compute_dtype
from ..rule import UpdateRule
from ._scalar import nonzero
from ._weight_decay import coupled_weight_decay
from .checks import check_int, check_min, check_unit
from .registry import member_rule, register


def ring_slot(step, m: int, device: torch.device) -> Tensor:
    """Boolean mask of the window row that step ``step`` (from 1) overwrites: (step - 1) mod m."""
    return torch.arange(m, device=device) == (step - 1) % m


def push_gradient(grads: Tensor, dots: Tensor, x: Tensor, slot: Tensor
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Replace row ``slot`` of G by ``x`` and row and column ``slot`` of GG^T by ``Gx``.
    Returns the new G, GG^T and Gx (O(md))."""
    grads = torch.where(slot[:, None], x, grads)
    gx = grads @ x
    dots = torch.where(slot[:, None], gx, torch.where(slot[None, :], gx[:, None], dots))
    return grads, dots, gx


def inverse_fisher_product(grads: Tensor, dots: Tensor, gx: Tensor, x: Tensor, damp) -> Tensor:
    """``(damp I + (1/m) G^T G)^{-1} x`` by the paper's recursion (module docstring), given
    ``dots = GG^T`` and ``gx = Gx``."""
    m = grads.shape[0]
    lam = 1.0 / damp
    eye = torch.eye(m, dtype=dots.dtype, device=dots.device)
    chol = torch.linalg.cholesky(lam * dots + m * eye)
    diag = torch.diagonal(chol)
    unit_lower = chol / diag                                   # A = L diag(l)^{-1}
    q = torch.linalg.solve_triangular(unit_lower, (lam * gx)[:, None], upper=False,
                                      unitriangular=True)
    coef = lam * torch.linalg.solve_triangular(unit_lower.mT, q / (diag * diag)[:, None],
                                               upper=True, unitriangular=True)  # B^T q / denom
    return lam * x - (grads.mT @ coef)[:, 0]


def _init(p):
    return {}


def _first_state(p: Tensor, hp) -> dict:
    dt, m = compute_dtype(p.dtype), hp["ngrads"]
    state = {"grads": torch.zeros(m, p.numel(), dtype=dt, device=p.device),
             "dots": torch.zeros(m, m, dtype=dt, device=p.device)}
    if nonzero(hp["momentum"]):
        state["momentum_buffer"] = torch.zeros(p.shape, dtype=dt, device=p.device)
    return state


def _update(g, p, state, hp, step):
    state = state if state else _first_state(p, hp)
    dt, mu = state["grads"].dtype, hp["momentum"]
    x = coupled_weight_decay(g.to(dt), p.to(dt), hp["weight_decay"]).reshape(-1)
    slot = ring_slot(step, hp["ngrads"], p.device)
    grads, dots, gx = push_gradient(state["grads"], state["dots"], x, slot)
    direction = inverse_fisher_product(grads, dots, gx, x, hp["damp"]).reshape(p.shape)
    new = {"grads": grads, "dots": dots}
    if nonzero(mu):
        direction = mu * state["momentum_buffer"] + (1 - mu) * direction
        new["momentum_buffer"] = direction
    return (hp["lr"] * direction).to(p.dtype), new


def _check(hp):
    check_min(hp, "lr")
    check_unit(hp, "momentum")
    check_min(hp, "weight_decay")
    check_int(hp, "ngrads", 1)
    check_min(hp, "damp", strict=True)


@register("mfac",
          sample={"lr": 0.05, "ngrads": 3, "damp": 0.1, "momentum": 0.5, "weight_decay": 0.05})
def mfac() -> UpdateRule:
    return member_rule(_init, _update,
                       hp={"lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0, "ngrads": 1024,
                           "damp": 1e-5},
                       check=_check, caps=Capabilities(elementwise=False))
