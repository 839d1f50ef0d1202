"""FRUGAL: full-rank updates with gradient splitting (Zmushko, Beznosikov, Takáč, Horváth,
"FRUGAL: Memory-Efficient Optimization by Reducing State Overhead for Scalable Training",
ICML 2025, arXiv 2411.07837; official code: the authors' FRUGAL repository (linked from
the paper), ``frugal/``:
``proj_optimizer_templates.py``, ``galore_projector.py``, ``coordinate_projector.py``,
``adamw.py``), with AdamW as the state-full and signSGD as the state-free method.

A tensor with at least two dimensions is viewed as the matrix ``G`` (``shape[0]`` rows).
Every ``T = update_gap`` steps (steps 1, T+1, 2T+1, ...) a state-full subspace is chosen from
the current gradient and the Adam moments are reset (``reset_statistics``); in between it is
kept. With ``P`` the projection onto the subspace and ``P^T`` its embedding back:

    R_t     = P(G_t)                                     state-full part (low-dimensional)
    m, v    = Adam moments of R_t, in the subspace only; tau = steps since the last reset
    U_t     = m_hat / (sqrt(v_hat) + eps)                (bias correction with tau)
    F_t     = G_t - P^T(R_t)                             state-free residual
    W_t     = W_{t-1} (1 - lr wd) - lr s P^T(U_t) - lr s c sign(F_t)

with ``s = proj_params_lr_scale`` and ``c = inactive_lr_scale`` (the state-free lr is
``lr s c``). ``inactive_update_rule`` picks the state-free step: ``"sign_sgd"`` (the paper's),
``"sgd"`` (``F_t`` itself) or ``"no"`` (none: GaLore's low-rank update).
``proj_type`` picks the subspace of a ``m x n`` matrix; with the side of GaLore's ``"std"``
rule (left, ``r = round(m rho)`` columns ``Q`` in ``R^m``, ``P(G) = Q^T G``, when
``m < n``; else right, ``r = round(n rho)``, ``P(G) = G Q`` with ``Q`` in ``R^n``):
  * ``"svd"``: ``Q`` = the top ``r`` left (right) singular vectors of ``G_t`` (GaLore);
  * ``"random"``: a random semi-orthogonal ``Q`` (``torch.nn.init.orthogonal_``);
  * ``"randk"``: ``floor(m n rho)`` random coordinates of ``G`` (``P`` selects them).
Tensors with fewer than two dimensions (biases, norms) get plain AdamW, as the official code
gives every parameter outside its projected linear layers.

Defaults (official code): lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01,
density (rho) 0.25, update_gap 200, reset_statistics True, inactive_update_rule
``"sign_sgd"``, inactive_lr_scale 1.0 (the paper's pre-training; 0.1 for fine-tuning),
proj_params_lr_scale 1.0, proj_type ``"svd"``. ``reset_statistics=False`` keeps the moments
across subspace changes unprojected, as GaLore does (the paper's GaLore baseline with
``inactive_update_rule="no"``).

Departures (the first two forced by a rule that sees one tensor at a time):
  * The paper's main variant picks whole tensors (blockwise, BAdam-like) across a param
    group, which a per-tensor rule cannot see; ``"randk"`` is its per-tensor coordinate
    analogue, ``"svd"`` (the official GaLore-style projector's default) the default here.
  * The official code projects the weights of selected ``nn.Linear`` layers only; here
    every tensor with two or more dimensions is projected (convolutions as
    ``shape[0] x rest``), and all others take AdamW.
  * SVDs and random bases are computed in float64 for float64 tensors (the official code
    uses float32 for every dtype).
  * When the subspace is the whole space (``r = min(m, n)``) the residual is exactly zero,
    not the rounding error of ``G - Q Q^T G`` whose sign the official code would step on.
Random subspaces draw from torch's default generator (vmap them with ``randomness=``); the
SVD subspace is a deterministic function of the gradient. Every subspace is a selection that
differentiation through steps holds constant (as GaLore computes it, under ``no_grad``).
The moments and the basis are kept in the parameter's dtype, the count ``tau`` as a 0-d
float64 tensor; state is created by the first update (its shapes depend on ``density``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..capabilities import Capabilities
from ..helpers import compute_dtype
from ..rule import UpdateRule
from .adam import adam_direction
from .checks import check_betas, check_choice, check_int, check_min, check_unit
from .registry import member_rule, register

PROJ_TYPES = ("svd", "random", "randk")
INACTIVE_RULES = ("sign_sgd", "sgd", "no")


def as_matrix(x: Tensor) -> Tensor:
    """The ``shape[0] x rest`` matrix view of a tensor with two or more dimensions."""
    return x.reshape(x.shape[0], -1)


def projects_left(m: int, n: int) -> bool:
    """GaLore's ``"std"`` side: project the rows' space (``Q^T G``) when ``m < n``."""
    return m < n


def subspace_rank(m: int, n: int, density: float) -> int:
    """``r = round(rho min(m, n))``: the number of basis vectors (official rounding)."""
    return round(min(m, n) * density)

def svd_basis(G: Tensor, r: int) -> Tensor:
    """The top ``r`` left singular vectors of ``G`` (``m < n``) or right ones (``m >= n``),
    as the columns of ``Q``; a selection, held constant under differentiation (the SVD's
    derivative is infinite where singular values repeat, e.g. the zeros of a gradient with
    dead columns)."""
    G = G.detach()
    U, _, Vh = torch.linalg.svd(G.to(compute_dtype(G.dtype)), full_matrices=False)
    Q = U[:, :r] if projects_left(*G.shape) else Vh[:r].T
    return Q.to(G.dtype)


def random_basis(G: Tensor, r: int) -> Tensor:
    """A random ``Q`` with ``r`` orthonormal columns on ``G``'s side (drawn as the official
    code draws it: ``orthogonal_`` of an ``m x r``, or ``r x n`` then transposed, matrix)."""
    m, n = G.shape
    dt = compute_dtype(G.dtype)
    if projects_left(m, n):
        Q = torch.nn.init.orthogonal_(torch.empty(m, r, dtype=dt, device=G.device))
    else:
        Q = torch.nn.init.orthogonal_(torch.empty(r, n, dtype=dt, device=G.device)).T
    return Q.to(G.dtype)


def randk_index(G: Tensor, density: float) -> Tensor:
    """``floor(rho m n)`` distinct random positions in the flattened ``G``."""
    return torch.randperm(G.numel(), device=G.device)[: int(G.numel() * density)]


def project(G: Tensor, state: dict) -> Tensor:
    """``P(G)``: ``Q^T G`` or ``G Q`` for a basis, the selected entries for coordinates."""
    if "index" in state:
        return G.reshape(-1)[state["index"]]
    Q = state["basis"]
    return Q.T @ G if projects_left(*G.shape) else G @ Q


def embed(R: Tensor, state: dict, shape: torch.Size) -> Tensor:
    """``P^T(R)``: the full-size matrix of shape ``shape`` whose projection is ``R`` and
    which is zero on the complement."""
    if "index" in state:
        flat = torch.zeros(shape.numel(), dtype=R.dtype, device=R.device)
        return flat.index_copy(0, state["index"], R).reshape(shape)
    Q = state["basis"]
    return Q @ R if projects_left(*shape) else R @ Q.T


def split_gradient(G: Tensor, state: dict) -> tuple[Tensor, Tensor]:
    """``(R, F)``: the state-full coordinates ``R = P(G)`` and the state-free residual
    ``F = G - P^T(R)``, exactly zero when the subspace is the whole space."""
    R = project(G, state)
    whole = "basis" in state and state["basis"].shape[1] == min(G.shape)
    F = torch.zeros_like(G) if whole else G - embed(R, state, G.shape)
    return R, F


def new_subspace(G: Tensor, state: dict, hp) -> dict:
    """The state after choosing a subspace from ``G``: the new projector, and zero moments
    and count unless ``reset_statistics`` is off and moments exist."""
    kind, density = hp["proj_type"], hp["density"]
    if kind == "randk":
        new = {"index": randk_index(G, density)}
    else:
        r = subspace_rank(*G.shape, density)
        new = {"basis": svd_basis(G, r) if kind == "svd" else random_basis(G, r)}
    if state and not hp["reset_statistics"]:
        return {**new, **{k: state[k] for k in ("exp_avg", "exp_avg_sq", "count")}}
    R = project(G, new)
    return {**new, "exp_avg": torch.zeros_like(R), "exp_avg_sq": torch.zeros_like(R),
            "count": torch.zeros((), dtype=torch.float64, device=G.device)}


def state_free_step(F: Tensor, rule: str) -> Tensor:
    """The direction of the state-free part: ``sign(F)``, ``F`` or nothing."""
    if rule == "sign_sgd":
        return F.sign()
    return F if rule == "sgd" else torch.zeros_like(F)


def _init(p):
    if p.dim() >= 2:
        return {}
    return {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}


def _adamw_update(g, p, state, hp, step):
    d, new = adam_direction(g, state, hp, step)
    return hp["lr"] * (d + hp["weight_decay"] * p), new


def _update(g, p, state, hp, step):
    if p.dim() < 2:
        return _adamw_update(g, p, state, hp, step)
    G = as_matrix(g)
    if not state or (int(step) - 1) % hp["update_gap"] == 0:
        state = new_subspace(G, state, hp)
    R, F = split_gradient(G, state)
    count = state["count"] + 1
    U, moments = adam_direction(R, state, hp, count)
    lr = hp["lr"] * hp["proj_params_lr_scale"]
    step_free = lr * hp["inactive_lr_scale"] * state_free_step(F, hp["inactive_update_rule"])
    delta = lr * embed(U, state, G.shape) + step_free
    new = {**state, **moments, "count": count}
    return delta.reshape(p.shape) + hp["lr"] * hp["weight_decay"] * p, new


def _check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2)
    check_min(hp, "eps")
    check_min(hp, "weight_decay")
    check_unit(hp, "density", closed=True)
    check_int(hp, "update_gap", 1)
    check_choice(hp, "proj_type", PROJ_TYPES)
    check_choice(hp, "reset_statistics", (True, False))
    check_choice(hp, "inactive_update_rule", INACTIVE_RULES)
    check_min(hp, "inactive_lr_scale")
    check_min(hp, "proj_params_lr_scale")


@register("frugal", sample={"weight_decay": 0.05})
def frugal() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01,
            "density": 0.25, "update_gap": 200, "proj_type": "svd",
            "reset_statistics": True, "inactive_update_rule": "sign_sgd",
            "inactive_lr_scale": 1.0, "proj_params_lr_scale": 1.0},
        check=_check, caps=Capabilities(elementwise=False),
    )
