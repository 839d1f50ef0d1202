"""Subset-Norm (SN) step sizes and Subspace-Momentum (SM): ``adamw_sn``, ``adagrad_sn``,
``adamw_snsm``, ``adagrad_snsm`` (the official code's optimizer ids).

Thien Hang Nguyen, Huy Le Nguyen, "Lean and Mean Adaptive Optimization via Subset-Norm and
Subspace-Momentum with Convergence Guarantees", ICML 2025 (arXiv 2411.07120; v1 titled
"Efficient Adaptive Optimization via Subset-Norm and Subspace-Momentum: Fast, Memory-Reduced
Training with Convergence Guarantees"). Official code: github.com/timmytonga/sn-sm
(``GenericOptim.py``, ``subset_norm.py``, ``subspace_momentum.py``,
``projectors/svd_projector.py``).

Subset-Norm partitions a tensor's coordinates into subsets ``Psi_1..Psi_c`` and keeps one
second-moment number per subset (``psi(j)`` is the subset of coordinate ``j``):

    v_{t,i} = b2 v_{t-1,i} + (1 - b2) ||g_{t,Psi_i}||^2      adamw_*   (EMA)
    v_{t,i} =    v_{t-1,i} +          ||g_{t,Psi_i}||^2      adagrad_* (the paper's b_{t,i}^2)
    d_{t,j} = n_{t,j} / (sqrt(v_{t,psi(j)}) + eps)

The numerator ``n_t`` is the gradient's momentum, full or in a subspace:

    *_sn:    m_t = b1 m_{t-1} + (1 - b1) g_t,   n_t = m_t        (b1 = 0: n_t = g_t, no m)
    *_snsm:  m_t = b1 m_{t-1} + (1 - b1) P_t g_t                 (rank-r coordinates)
             n_t = P_t^* m_t + (g_t - P_t^* P_t g_t)             (plain gradient off the subspace)

and the step, with decoupled weight decay applied after it (as the official code does),

    p_{t+1} = (p_t - lr c_t d_t) (1 - lr wd),   c_t = sqrt(1 - b2^t) / (1 - b1^t) for adamw_*,
                                                c_t = 1 for adagrad_* (no bias correction).

``adagrad_*`` take ``beta1`` (the official ``betas = (beta1, 1)``); ``beta1 = 0`` is the
paper's AdaGrad-Subset-Norm. Subsets (``subset_size``):
  * ``"heuristics"`` (the paper's partition): a matrix ``m x n`` has one subset per row when
    ``m >= n``, else one per column, so each subset runs along the shorter side and the state
    holds ``max(m, n)`` numbers; a vector is coordinate-wise (the official code gives
    non-matrix tensors coordinate-wise Adam/AdaGrad).
  * an integer ``k > 0``: the flattened tensor in contiguous chunks of the largest divisor of
    ``numel`` that is ``<= k`` (``k = 1``: AdaGrad/Adam; ``k >= numel``: AdaGrad-Norm per
    tensor); ``k < 0``: chunks of ``<= int(sqrt(numel) / |k|)`` (the official ``-2`` default
    of its command line).

Subspace-Momentum acts on matrices (a vector keeps full momentum, as in the official code).
``P_t`` is refreshed at steps 1, gap, 2 gap, ... (``update_proj_gap``, the official schedule)
from the SVD ``G = U S V^T`` of the current gradient: ``P g = G V_r`` (an ``m x r`` momentum)
when ``m >= n``, else ``P g = U_r^T G`` (``r x n``), ``r = min(rank, m, n)``; the momentum
restarts from zero at every refresh (the official default).

Defaults (official ``GenericOptim`` and command line): lr 1e-3, betas (0.9, 0.999) /
beta1 0.9, eps 1e-6, weight_decay 0, subset_size "heuristics", rank 128,
update_proj_gap 200. The paper's runs use larger lr than Adam's (about 10x for adamw_sn).

Deliberate departures from the official code:
  * tensors of 3 or more dimensions get SN and SM on their ``shape[0] x rest`` matrix view
    (the official code applies them to ``nn.Linear`` weights only);
  * at a refresh step the official code steps with the stale pre-refresh momentum (the
    in-place update hits the buffer it has just replaced by zeros) and stores zeros; here
    the refresh step uses the restarted momentum ``(1 - b1) P_t g_t`` and stores it;
  * the SVD runs in the gradient's dtype for float32/float64 (the official code always uses
    float32) and in float32 for lower precisions; only the SVD projector is provided (the
    official code also offers SRHT, top-k, uniform and approximate-SVD projectors);
  * an integer subset size larger than the tensor means the whole tensor (the official code
    asserts; pytorch_optimizer's AdamWSN does this), and a negative one is at least 1.
State is created on the first update (its shapes depend on the hyperparameters); the refresh
schedule reads the step as a Python int (an int or an unbatched 0-d tensor).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..capabilities import Capabilities
from ..rule import UpdateRule
from ._scalar import nonzero
from ._sqrt import sqrt0
from .checks import check_betas, check_int, check_min, check_unit, fail
from .registry import member_rule, register

HEURISTICS = "heuristics"


def largest_divisor_at_most(n: int, k: int) -> int:
    """The largest divisor of ``n`` that is ``<= k`` (``k >= 1``)."""
    return next(i for i in range(min(k, n), 0, -1) if n % i == 0)


def chunk_size(numel: int, subset_size: int) -> int:
    """Subset size for an integer ``subset_size``: ``k > 0`` asks for ``k``, ``k < 0`` for
    ``sqrt(numel) / |k|``; the result divides ``numel``."""
    want = subset_size if subset_size > 0 else int(math.sqrt(numel) / -subset_size)
    return largest_divisor_at_most(numel, max(want, 1))


def matrix_view(shape: torch.Size) -> tuple[int, int]:
    """``(shape[0], prod(shape[1:]))``: how a tensor of 2 or more dimensions is seen as a matrix."""
    return shape[0], math.prod(shape[1:])


def partition(shape: torch.Size, subset_size) -> tuple[tuple[int, int], int]:
    """``(view, axis)``: the tensor reshaped to the matrix ``view`` has one subset per line
    along ``axis`` (``axis = 1``: each row is a subset, ``axis = 0``: each column)."""
    numel = math.prod(shape)
    if subset_size == HEURISTICS:
        if len(shape) < 2:
            return (numel, 1), 1
        m, n = matrix_view(shape)
        return (m, n), 1 if m >= n else 0
    k = chunk_size(numel, subset_size)
    return (numel // k, k), 1


def subset_state_shape(shape: torch.Size, subset_size) -> tuple[int, int]:
    """Shape of the second moment: one number per subset."""
    view, axis = partition(shape, subset_size)
    return (view[0], 1) if axis == 1 else (1, view[1])


def subset_sq_norms(g: Tensor, view: tuple[int, int], axis: int) -> Tensor:
    """``||g_{Psi_i}||^2`` for every subset, shaped to broadcast against ``g.reshape(view)``."""
    return g.reshape(view).square().sum(axis, keepdim=True)


def top_singular_basis(mat: Tensor, rank: int) -> Tensor:
    """The top-``rank`` singular vectors on the shorter side of ``mat``: ``V_r^T`` (``r x n``)
    when ``m >= n``, else ``U_r`` (``m x r``)."""
    work = mat if mat.dtype in (torch.float32, torch.float64) else mat.float()
    u, _, vh = torch.linalg.svd(work, full_matrices=False)
    basis = vh[:rank] if mat.shape[0] >= mat.shape[1] else u[:, :rank]
    return basis.to(mat.dtype)


def project(mat: Tensor, basis: Tensor) -> Tensor:
    """``P G``: the subspace coordinates (``G V_r`` or ``U_r^T G``)."""
    return mat @ basis.T if mat.shape[0] >= mat.shape[1] else basis.T @ mat


def project_back(low: Tensor, basis: Tensor, tall: bool) -> Tensor:
    """``P^* X``: subspace coordinates back to the full matrix (``X V_r^T`` or ``U_r X``)."""
    return low @ basis if tall else basis @ low


def _has_momentum(hp) -> bool:
    return nonzero(_beta1(hp))


def _beta1(hp):
    return hp["betas"][0] if "betas" in hp else hp["beta1"]


def _uses_subspace(p: Tensor, hp) -> bool:
    return "rank" in hp and p.dim() >= 2 and _has_momentum(hp)


def _basis_shape(p: Tensor, rank: int) -> tuple[int, int]:
    m, n = matrix_view(p.shape)
    r = min(rank, m, n)
    return (r, n) if m >= n else (m, r)


def _low_shape(p: Tensor, rank: int) -> tuple[int, int]:
    m, n = matrix_view(p.shape)
    r = min(rank, m, n)
    return (m, r) if m >= n else (r, n)


def _init(p: Tensor) -> dict:
    return {}


def _first_state(p: Tensor, hp) -> dict:
    zeros = lambda shape: torch.zeros(shape, dtype=p.dtype, device=p.device)
    state = {"exp_avg_sq": zeros(subset_state_shape(p.shape, hp["subset_size"]))}
    if _uses_subspace(p, hp):
        state["exp_avg"] = zeros(_low_shape(p, hp["rank"]))
        state["projector"] = zeros(_basis_shape(p, hp["rank"]))
    elif _has_momentum(hp):
        state["exp_avg"] = torch.zeros_like(p)
    return state


def full_momentum(g, state, hp, step):
    """``n_t = m_t = b1 m_{t-1} + (1 - b1) g_t``."""
    m = torch.lerp(state["exp_avg"], g, 1 - _beta1(hp))
    return m, {"exp_avg": m}


def subspace_momentum(g, state, hp, step):
    """``n_t = P^* m_t + (g_t - P^* P g_t)`` with ``m_t`` the momentum of ``P g`` (restarted,
    and ``P`` recomputed from ``g_t``, at steps 1, gap, 2 gap, ...)."""
    mat = g.reshape(matrix_view(g.shape))
    tall = mat.shape[0] >= mat.shape[1]
    t = int(step)
    if t == 1 or t % hp["update_proj_gap"] == 0:
        basis = top_singular_basis(mat, hp["rank"])
        m_prev = torch.zeros_like(state["exp_avg"])
    else:
        basis, m_prev = state["projector"], state["exp_avg"]
    low = project(mat, basis)
    m = torch.lerp(m_prev, low, 1 - _beta1(hp))
    num = project_back(m, basis, tall) + mat - project_back(low, basis, tall)
    return num.reshape(g.shape), {"exp_avg": m, "projector": basis}


def _make_update(adam: bool):
    def update(g, p, state, hp, step):
        state = dict(state) if state else _first_state(p, hp)
        if _uses_subspace(p, hp):
            num, new = subspace_momentum(g, state, hp, step)
        elif _has_momentum(hp):
            num, new = full_momentum(g, state, hp, step)
        else:
            num, new = g, {}
        view, axis = partition(p.shape, hp["subset_size"])
        sq = subset_sq_norms(g, view, axis)
        if adam:
            b1, b2 = hp["betas"]
            v = torch.lerp(state["exp_avg_sq"], sq, 1 - b2)
            scale = hp["lr"] * (1 - b2**step) ** 0.5 / (1 - b1**step)
        else:
            v = state["exp_avg_sq"] + sq
            scale = hp["lr"]
        d = (num.reshape(view) / (sqrt0(v) + hp["eps"])).reshape(p.shape)
        delta = scale * d
        if nonzero(hp["weight_decay"]):  # decay after the step: p_new = (p - delta)(1 - lr wd)
            delta = delta + hp["lr"] * hp["weight_decay"] * (p - delta)
        return delta, dict(new, exp_avg_sq=v)

    return update


def _check(hp):
    check_min(hp, "lr")
    if "betas" in hp:
        check_betas(hp, 2)
    else:
        check_unit(hp, "beta1")
    check_min(hp, "eps")
    check_min(hp, "weight_decay")
    s = hp["subset_size"]
    if s != HEURISTICS and (isinstance(s, bool) or not isinstance(s, int) or s == 0):
        fail(f"invalid subset_size={s!r}: must be 'heuristics' or a nonzero integer")
    if "rank" in hp:
        check_int(hp, "rank", 1)
        check_int(hp, "update_proj_gap", 1)


def _rule(adam: bool, subspace: bool) -> UpdateRule:
    hp = {"lr": 1e-3}
    hp.update({"betas": (0.9, 0.999)} if adam else {"beta1": 0.9})
    hp.update(eps=1e-6, weight_decay=0.0, subset_size=HEURISTICS)
    if subspace:
        hp.update(rank=128, update_proj_gap=200)
    return member_rule(_init, _make_update(adam), hp=hp, check=_check,
                       caps=Capabilities(elementwise=False))


@register("adamw_sn", sample={"weight_decay": 0.05})
def adamw_sn() -> UpdateRule:
    return _rule(adam=True, subspace=False)


@register("adagrad_sn", sample={"weight_decay": 0.05})
def adagrad_sn() -> UpdateRule:
    return _rule(adam=False, subspace=False)


@register("adamw_snsm", sample={"weight_decay": 0.05})
def adamw_snsm() -> UpdateRule:
    return _rule(adam=True, subspace=True)


@register("adagrad_snsm", sample={"weight_decay": 0.05})
def adagrad_snsm() -> UpdateRule:
    return _rule(adam=False, subspace=True)
