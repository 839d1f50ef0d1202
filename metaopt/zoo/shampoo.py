"""Shampoo: one Kronecker factor per tensor dimension, inverse ``2k``-th roots.

Gupta, Koren, Singer, "Shampoo: Preconditioned Stochastic Tensor Optimization" (ICML 2018),
Algorithm 2, for an order-``k`` parameter with gradient ``G``:

    G'_t  = (1 - mu) G_t + mu D_{t-1}   (G'_1 = G_1)        momentum, when mu > 0
    G'_t  = G'_t + wd W_{t-1}                                coupled L2 weight decay
    L^i_t = L^i_{t-1} + G'_(i) G'_(i)^T,   L^i_0 = eps I     statistics of each dimension i
    D_t   = G'_t x_1 (L^1_t)^{-1/2k} x_2 ... x_k (L^k_t)^{-1/2k}       (mode-i products)
    W_t   = W_{t-1} - lr D_t

``G'_(i)`` is the mode-``i`` unfolding. The roots are recomputed every
``precondition_frequency`` steps (steps 1, f+1, 2f+1, ...; in between the last roots are
reused) by a float64 eigendecomposition ``L = V diag(lam) V^T -> V diag(lam^{-1/2k}) V^T``.
A 1-D parameter gets full-matrix AdaGrad (``L^{-1/2}``); a 4-D convolution kernel four factors
with ``-1/8`` roots. Dimensions larger than ``max_precond_dim`` get no factor (identity).

Statistics, roots and the momentum buffer are float32 for bf16/fp16 parameters.
``graft="adagrad"`` rescales ``D_t`` to the norm of the AdaGrad direction
``G' / (sqrt(sum G'^2) + graft_eps)`` (layer-wise grafting, Agarwal et al. 2020, as in
facebookresearch/optimizers' Distributed Shampoo); ``"none"`` is the paper's update.

The momentum form (mixing the raw gradient with the last *preconditioned* direction) and the
defaults (lr 1e-3, momentum 0, eps 1e-6, weight decay 0, roots every step) are those of the
public PyTorch Shampoo (moskomule/shampoo.pytorch, ``pytorch_optimizer.Shampoo``).
State is created on the first update (its shapes depend on the hyperparameters).
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..helpers import compute_dtype, mode_gram
from ..rule import UpdateRule
from .checks import check_choice, check_int, check_min, check_unit
from .registry import member_rule, register

GRAFTS = ("none", "adagrad")


def precond_dims(shape: torch.Size, max_dim: int) -> list[int]:
    """Dimensions that get a Kronecker factor."""
    return [i for i, n in enumerate(shape) if n <= max_dim]

def mode_product(g: torch.Tensor, mat: torch.Tensor, i: int) -> torch.Tensor:
    """``G x_i M``: multiply dimension ``i`` of ``g`` by the matrix ``mat``."""
    return torch.tensordot(mat, g, dims=([1], [i])).movedim(0, i)


def inverse_root(mat: torch.Tensor, root: int, floor: float) -> torch.Tensor:
    """``mat^{-1/root}`` for a symmetric ``mat >= floor * I``, by an eigendecomposition in
    float64. Eigenvalues are floored at ``floor``: the statistics are ``eps I + sum G G^T``,
    so every true eigenvalue is at least ``eps``, but float32 accumulation of large ``G G^T``
    terms can round the small ones to zero or below, whose root would blow the step up."""
    lam, vec = torch.linalg.eigh(mat.to(torch.float64))
    lam = lam.clamp_min(floor) ** (-1.0 / root)
    return ((vec * lam) @ vec.T).to(mat.dtype)


def _init(p):
    return {}

def _first_state(p, hp) -> dict:
    state = {}
    dt = compute_dtype(p.dtype)
    for i in precond_dims(p.shape, hp["max_precond_dim"]):
        state[f"stat_{i}"] = hp["eps"] * torch.eye(p.shape[i], dtype=dt, device=p.device)
        state[f"root_{i}"] = torch.zeros_like(state[f"stat_{i}"])
    return state


def _update(g, p, state, hp, step):
    out_dtype = p.dtype
    state = dict(state) if state else _first_state(p, hp)
    mu, wd, order = hp["momentum"], hp["weight_decay"], max(p.dim(), 1)
    g, p = g.to(compute_dtype(p.dtype)), p.to(compute_dtype(p.dtype))
    if mu > 0:
        g = g if int(step) == 1 else torch.lerp(g, state["momentum_buffer"], mu)
    if wd != 0:
        g = g + wd * p
    refresh = (int(step) - 1) % int(hp["precondition_frequency"]) == 0
    d = g
    for i in precond_dims(p.shape, hp["max_precond_dim"]):
        state[f"stat_{i}"] = state[f"stat_{i}"] + mode_gram(g, i)
        if refresh:
            state[f"root_{i}"] = inverse_root(state[f"stat_{i}"], 2 * order, hp["eps"])
        d = mode_product(d, state[f"root_{i}"], i)
    if hp["graft"] == "adagrad":
        acc = state.get("graft_sum", torch.zeros_like(g)) + g * g
        graft_dir = g / (acc.sqrt() + hp["graft_eps"])
        d = d * (graft_dir.norm() / d.norm().clamp_min(torch.finfo(d.dtype).tiny))
        state["graft_sum"] = acc
    if mu > 0:
        state["momentum_buffer"] = d
    return (hp["lr"] * d).to(out_dtype), state


def _check(hp):
    check_min(hp, "lr")
    check_unit(hp, "momentum")
    check_min(hp, "weight_decay")
    check_min(hp, "eps", strict=True)
    check_min(hp, "graft_eps", strict=True)
    for key in ("precondition_frequency", "max_precond_dim"):
        check_int(hp, key, 1)
    check_choice(hp, "graft", GRAFTS)


@register("shampoo", sample={"weight_decay": 0.05})
def shampoo() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0, "eps": 1e-6,
            "precondition_frequency": 1, "max_precond_dim": 8192, "graft": "none",
            "graft_eps": 1e-10},
        check=_check, caps=Capabilities(elementwise=False),
    )
