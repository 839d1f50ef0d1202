"""PSGD with a Kronecker-factored preconditioner (PSGD-Kron).

Li, "Preconditioned Stochastic Gradient Descent" (IEEE TNNLS 2018, arXiv 1512.04202) and
"Black Box Lie Group Preconditioners for SGD" (arXiv 2211.04422); reference code
github.com/lixilinx/psgd_torch and its single-optimizer port evanatyourservice/kron_torch,
whose algorithm and defaults ``pytorch_optimizer.Kron`` carries and this file follows.

For a tensor with gradient ``G`` the preconditioner is ``P = Q^T Q`` with
``Q = Q_1 (x) ... (x) Q_k``: an upper-triangular ``Q_i`` per dimension (a diagonal one for 1-D
tensors, size-1 or wider-than-``max_size_triangular`` dimensions, or by ``memory_save_mode``):

    m   <- mu m + (1 - mu) G,     m_hat = m / (1 - mu^t)
    when the preconditioner is updated (probe V ~ N(0, I)):
        A = m_hat x_1 Q_1 ... x_k Q_k,         B = V x_1 Q_1^{-T} ... x_k Q_k^{-T}
        T1_i = A_(i) A_(i)^T,  T2_i = B_(i) B_(i)^T      (diagonal Q_i: their diagonals)
        Q_i <- Q_i - lr_P triu(T1_i - T2_i) Q_i / (||T1_i + T2_i|| + tiny)
      (``||.||`` a cheap lower bound of the spectral norm, the max-norm for diagonal ``Q_i``)
    D   = m_hat x_1 Q_1^T Q_1 ... x_k Q_k^T Q_k,   D <- D min(1, 1.1 / (rms(D) + 1e-6))
    p   <- p - lr (D + wd p)        (weight decay on tensors with >= 2 dimensions only)

The preconditioner is updated when a per-tensor counter reaches ``1 / prob(t - 1)`` (a
deterministic schedule: ``prob(n) = clip(exp(-0.001 (n - 500)), 0.03, 1)`` by default, or the
constant ``update_probability``). The factors are rebalanced (their max-norms equalised, which
leaves ``Q`` unchanged) before every preconditioner update, where kron_torch does it with
probability 0.01. Probes use the global torch generator. Defaults (kron_torch): lr 1e-3,
momentum 0.9, weight_decay 0, precondition_lr 0.1, init scale 1, max_size_triangular 8192,
min_ndim_triangular 2. Preconditioner factors live in float32 (float64 for float64 params).
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..helpers import compute_dtype
from ..rule import UpdateRule
from .checks import check_choice, check_int, check_min, check_unit
from .registry import member_rule, register

MEMORY_SAVE_MODES = (None, "one_diag", "smart_one_diag", "all_diag")


def diagonal_dims(shape, hp) -> list[bool]:
    """Which dimensions get a diagonal (rather than triangular) factor."""
    n = len(shape)
    mode = hp["memory_save_mode"]
    diag = [False] * n
    largest = max(range(n), key=lambda i: (shape[i], i)) if n else 0  # last of ties
    if mode == "all_diag":
        diag = [True] * n
    elif mode == "one_diag" or (mode == "smart_one_diag" and n >= 2
                                and sorted(shape)[-1] > sorted(shape)[-2]):
        diag[largest] = True
    return [d or size == 1 or size > hp["max_size_triangular"] or n < hp["min_ndim_triangular"]
            for size, d in zip(shape, diag)]

def initial_factors(shape, hp, device, dtype) -> list[torch.Tensor]:
    scale = hp["precondition_init_scale"] ** (1.0 / len(shape))
    return [scale * (torch.ones(n, device=device, dtype=dtype) if d else
                     torch.eye(n, device=device, dtype=dtype))
            for n, d in zip(shape, diagonal_dims(shape, hp))]


def along(x: torch.Tensor, q: torch.Tensor, i: int) -> torch.Tensor:
    """``x x_i Q`` (sum over the second index of ``Q``); a diagonal ``Q`` scales dimension i."""
    if q.dim() == 1:
        return x * q.reshape([-1] + [1] * (x.dim() - i - 1))
    return torch.tensordot(q, x, dims=([1], [i])).movedim(0, i)


def solve_along(x: torch.Tensor, q: torch.Tensor, i: int) -> torch.Tensor:
    """``x x_i Q^{-T}`` for an upper-triangular (or diagonal) ``Q``."""
    if q.dim() == 1:
        return x / q.reshape([-1] + [1] * (x.dim() - i - 1))
    last = x.movedim(i, -1)
    flat = torch.linalg.solve_triangular(q, last.reshape(-1, q.shape[0]), upper=True, left=False)
    return flat.reshape(last.shape).movedim(-1, i)


def second_moment(x: torch.Tensor, i: int, diagonal: bool) -> torch.Tensor:
    """``X_(i) X_(i)^T`` (its diagonal when ``diagonal``)."""
    u = x.movedim(i, 0).reshape(x.shape[i], -1)
    return (u * u).sum(1) if diagonal else u @ u.T


def spectral_norm_lower_bound(a: torch.Tensor) -> torch.Tensor:
    """A lower bound on ``||A||_2`` from one power step started at A's largest row or column
    (Li's PSGD step-size normaliser): ``||A^T x|| / ||x||`` for ``x`` that column or row."""
    scale = a.abs().max()
    a = a / torch.where(scale > 0, scale, torch.ones_like(scale))
    tiny = torch.finfo(a.dtype).tiny
    col_mass, i = (a * a).sum(0).max(0)
    row_mass, j = (a * a).sum(1).max(0)
    x0 = a[:, i] @ a
    bound0 = torch.linalg.vector_norm((x0 / torch.linalg.vector_norm(x0).clamp_min(tiny)) @ a.T)
    x1 = a @ a[j, :]
    bound1 = torch.linalg.vector_norm(a.T @ (x1 / torch.linalg.vector_norm(x1).clamp_min(tiny)))
    return scale * torch.where(col_mass > row_mass, bound0, bound1)


def balance(qs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Rescale the factors to equal max-norms with the same Kronecker product."""
    norms = torch.stack([q.abs().max() for q in qs])
    mean = norms.prod() ** (1.0 / len(qs))
    return [q * (mean / n) for q, n in zip(qs, norms)]


def update_factors(qs, m_hat, probe, lr_p) -> list[torch.Tensor]:
    """One step of the Lie-group fit of ``Q`` to the pair (m_hat, probe)."""
    a, b = m_hat, probe
    for i, q in enumerate(qs):
        a, b = along(a, q, i), solve_along(b, q, i)
    tiny = torch.finfo(torch.bfloat16).tiny
    new = []
    for i, q in enumerate(qs):
        t1, t2 = second_moment(a, i, q.dim() == 1), second_moment(b, i, q.dim() == 1)
        if q.dim() == 1:
            new.append(q - lr_p * (t1 - t2) * q / ((t1 + t2).abs().max() + tiny))
        else:
            step = torch.triu(t1 - t2) / (spectral_norm_lower_bound(t1 + t2) + tiny)
            new.append(q - lr_p * step @ q)
    return new


def precondition(qs, x) -> torch.Tensor:
    for i, q in enumerate(qs):
        x = along(x, q * q if q.dim() == 1 else q.T @ q, i)
    return x


def update_probability(hp, n: int) -> torch.Tensor:
    if hp["update_probability"] is not None:
        return torch.tensor(float(hp["update_probability"]))
    prob = torch.exp(-0.001 * (torch.tensor(n, dtype=torch.float32) - 500))
    return prob.clamp(0.03, 1.0)


def _init(p):
    return {}


def _update(g, p, state, hp, step):
    t = int(step)
    shape = p.shape if p.dim() > 0 else (1,)
    pdt = compute_dtype(p.dtype)
    k = len(shape)
    qs = ([state[f"q_{i}"] for i in range(k)] if state else
          initial_factors(shape, hp, p.device, pdt))
    counter = state["update_counter"] if state else torch.zeros((), dtype=torch.float32)
    mu, wd, lr = hp["momentum"], hp["weight_decay"], hp["lr"]
    if wd != 0 and p.dim() >= 2 and not hp["weight_decouple"]:
        g = g + wd * p
    m = (state["momentum_buffer"] if state else torch.zeros_like(p)) * mu + (1 - mu) * g
    m_hat = (m / (1 - mu ** t)).to(pdt).reshape(shape)
    prob = update_probability(hp, t - 1)
    counter = counter + 1
    if bool(prob > 0) and bool(counter >= 1 / prob):
        counter = torch.zeros_like(counter)
        if p.dim() > 1:
            qs = balance(qs)
        target = m_hat if hp["momentum_into_precondition_update"] else g.to(pdt).reshape(shape)
        probe = torch.randn(m_hat.shape, dtype=m_hat.dtype, device=m_hat.device)  # logical order
        qs = update_factors(qs, target, probe, hp["precondition_lr"])
    d = precondition(qs, m_hat).to(p.dtype).reshape(p.shape)
    d = d * torch.clamp(1.1 / (d.square().mean().sqrt() + 1e-6), max=1.0)
    if wd != 0 and p.dim() >= 2 and hp["weight_decouple"]:
        d = d + wd * p
    new = {"momentum_buffer": m, "update_counter": counter}
    new.update({f"q_{i}": q for i, q in enumerate(qs)})
    return lr * d, new


def _check(hp):
    check_min(hp, "lr")
    check_unit(hp, "momentum")
    check_min(hp, "weight_decay")
    check_min(hp, "precondition_lr", strict=True)
    check_min(hp, "precondition_init_scale", strict=True)
    for key in ("max_size_triangular", "min_ndim_triangular"):
        check_int(hp, key, 0)
    check_choice(hp, "memory_save_mode", MEMORY_SAVE_MODES)
    if hp["update_probability"] is not None:
        check_unit(hp, "update_probability", closed=True)


@register("psgd",
          sample={"weight_decay": 0.05},
          opt_out={"independent_tensors": "draws random probes tensor by tensor: tensors stepped "
                       "together and apart see different draws"})
def psgd() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0, "weight_decouple": True,
            "precondition_lr": 0.1, "precondition_init_scale": 1.0,
            "max_size_triangular": 8192, "min_ndim_triangular": 2, "memory_save_mode": None,
            "momentum_into_precondition_update": True, "update_probability": None},
        check=_check, caps=Capabilities(elementwise=False),
    )
