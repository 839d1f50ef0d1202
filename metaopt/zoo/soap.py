"""SOAP: Adam run in the eigenbasis of Shampoo's preconditioner.

Vyas, Morwani, Zhao, Kwun, Shapira, Brandfonbrener, Janson, Kakade, "SOAP: Improving and
Stabilizing Shampoo using Adam" (ICLR 2025, arXiv 2409.11321), Algorithm 3; official code
github.com/nikhilvyas/SOAP (``soap.py``). For each dimension ``i`` of a tensor (at most
``max_precond_dim`` wide; 1-D tensors only with ``precondition_1d``) with gradient ``G``:

    L_i   <- sb L_i + (1 - sb) G_(i) G_(i)^T               (sb = shampoo_beta, default b2)
    G'    =  G x_1 Q_1^T ... x_k Q_k^T                      (rotate into the eigenbasis)
    m     <- b1 m + (1 - b1) G                              (first moment, original basis)
    v     <- b2 v + (1 - b2) G'^2                           (second moment, rotated basis)
    N     =  ((m x_i Q_i^T) / (sqrt(v) + eps)) x_1 Q_1 ... x_k Q_k     (rotate back)
    p     <- (p - lr sqrt(1 - b2^s) / (1 - b1^s) N) (1 - lr wd)       (s = t - 1)

The first step only collects ``L_i`` and takes ``Q_i`` from an eigendecomposition (eigenvalues
descending); it does not move the parameter. Every ``precondition_frequency`` steps (``s``
divisible by it) ``Q_i`` is refreshed by one step of power iteration and a QR decomposition,
``Q_i <- qr(L_i Q_i)``, with the columns sorted by the estimated eigenvalues
``diag(Q_i^T L_i Q_i)`` and ``v`` permuted the same way; the QR runs in float32 as in the
official code. Statistics of bf16/fp16 parameters are kept in float32.
Defaults (official): lr 3e-3, betas (0.95, 0.95), eps 1e-8, weight_decay 0.01,
precondition_frequency 10, max_precond_dim 10000, precondition_1d False. Not supported:
``merge_dims`` and ``normalize_grads`` (both off by default in the official code).
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..helpers import compute_dtype, mode_gram, sqrt0
from ..rule import UpdateRule
from .checks import check_betas, check_int, check_min, check_unit
from .registry import member_rule, register


def factor_dims(p: torch.Tensor, hp) -> list[int]:
    """Dimensions that get an eigenbasis."""
    if p.dim() == 1 and not hp["precondition_1d"]:
        return []
    return [i for i, n in enumerate(p.shape) if n <= hp["max_precond_dim"]]

def rotate(x: torch.Tensor, qs: dict[int, torch.Tensor], back: bool = False) -> torch.Tensor:
    """``x x_i Q_i^T`` for every factored dimension (``x x_i Q_i`` when ``back``)."""
    for i, q in qs.items():
        x = torch.tensordot(q if back else q.T, x, dims=([1], [i])).movedim(0, i)
    return x


def eigenbasis(mat: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of a symmetric matrix, by descending eigenvalue (in float32 for lower
    precisions, which ``eigh`` does not take, as the official code)."""
    work = mat if mat.dtype in (torch.float32, torch.float64) else mat.float()
    eye = torch.eye(mat.shape[0], dtype=work.dtype, device=mat.device)
    return torch.linalg.eigh(work + 1e-30 * eye)[1].flip(1).to(mat.dtype)


def refresh_basis(mat, q, v, i):
    """One power-iteration + QR step of ``Q``, sorted by estimated eigenvalue; ``v`` (the
    second moment) permuted along dimension ``i`` to follow its columns."""
    mq = mat @ q
    order = torch.argsort((q * mq).sum(0), descending=True)
    q_new = torch.linalg.qr(mq.index_select(1, order).to(torch.float32))[0].to(q.dtype)
    return q_new, v.index_select(i, order)


def _init(p):
    return {}


def _shampoo_beta(hp):
    return hp["betas"][1] if hp["shampoo_beta"] is None else hp["shampoo_beta"]


def _first_step(g, p, hp):
    sb = _shampoo_beta(hp)
    wd = compute_dtype(p.dtype)
    g = g.to(wd)
    state = {k: torch.zeros_like(p, dtype=wd) for k in ("exp_avg", "exp_avg_sq")}
    for i in factor_dims(p, hp):
        state[f"gg_{i}"] = (1 - sb) * mode_gram(g, i)
        state[f"q_{i}"] = eigenbasis(state[f"gg_{i}"])
    return torch.zeros_like(p), state


def _update(g, p, state, hp, step):
    if int(step) == 1 or not state:
        return _first_step(g, p, hp)
    b1, b2 = hp["betas"]
    s = int(step) - 1
    dims = factor_dims(p, hp)
    qs = {i: state[f"q_{i}"] for i in dims}
    # bf16/fp16 parameters: statistics and arithmetic in float32 (eps 1e-8 and the squares of
    # small rotated gradients are 0 in float16)
    out, wd = p.dtype, compute_dtype(p.dtype)
    g, p = g.to(wd), p.to(wd)
    m = torch.lerp(state["exp_avg"], g, 1 - b1)
    v = torch.lerp(state["exp_avg_sq"], rotate(g, qs) ** 2, 1 - b2)
    direction = rotate(rotate(m, qs) / (sqrt0(v) + hp["eps"]), qs, back=True)
    step_size = hp["lr"] * (1 - b2 ** s) ** 0.5 / (1 - b1 ** s)
    moved = (p - step_size * direction) * (1 - hp["lr"] * hp["weight_decay"])
    new = {"exp_avg": m}
    sb = _shampoo_beta(hp)
    for i in dims:
        new[f"gg_{i}"] = torch.lerp(state[f"gg_{i}"], mode_gram(g, i), 1 - sb)
        new[f"q_{i}"] = qs[i]
        if s % int(hp["precondition_frequency"]) == 0:
            new[f"q_{i}"], v = refresh_basis(new[f"gg_{i}"], qs[i], v, i)
    new["exp_avg_sq"] = v
    return (p - moved).to(out), new


def _check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2)
    check_min(hp, "eps")
    check_min(hp, "weight_decay")
    if hp["shampoo_beta"] is not None:
        check_unit(hp, "shampoo_beta")
    for key in ("precondition_frequency", "max_precond_dim"):
        check_int(hp, key, 1)


@register("soap", sample={"weight_decay": 0.05})
def soap() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 3e-3, "betas": (0.95, 0.95), "shampoo_beta": None, "eps": 1e-8,
            "weight_decay": 0.01, "precondition_frequency": 10, "max_precond_dim": 10000,
            "precondition_1d": False},
        check=_check, caps=Capabilities(elementwise=False),
    )
