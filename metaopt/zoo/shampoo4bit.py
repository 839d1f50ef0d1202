"""4-bit Shampoo: Shampoo whose preconditioner states are stored as 4-bit eigenvector matrices.

Wang, Zhou, Li, Huang, "4-bit Shampoo for Memory-Efficient Network Training" (NeurIPS 2024,
arXiv 2405.18144); official code github.com/Sike-Wang/low-bit-Shampoo (``optimizers/
shampoo2.py``, class ``ShampooAdamW``; ``qtensor/``). A parameter is viewed as a matrix ``G``
(size-1 dimensions dropped, then ``(d_0, d_1 * ... * d_k)``; 1-D parameters get no
preconditioner) cut into blocks of at most ``prec_maxorder`` rows and columns. Each block keeps,
for its left (``G G^T``) and right (``G^T G``) statistics, eigenvalues ``lam`` in full precision
and the eigenvector matrix ``V`` quantized, ``Vq = Q(V)``. At step ``t``:

  every ``stat_compute_steps`` (T1) steps, for each statistic (paper's Algorithm with the
  statistics decay ``b = stat_decay``; ``1 - b`` is replaced by 1 when ``b = 1``):
    V     = B^{rect_t1}(D(Vq))                        dequantize, Björck-rectify
    A     = b V diag(lam) V^T + (1 - b) G G^T         rebuild and accumulate
    V', _ = qr(A V)                                   one warm-started power/QR step
    lam   = diag(V'^T A V'),   Vq = Q(V')
  every ``prec_compute_steps`` (T2) steps:
    V     = B^{rect_t2}(D(Vq))
    P     = V diag(lam + matrix_eps max(lam))^{-1/4} V^T,   stored as (diag(P), Q(P - diag P))
  from step max(T2, start_prec_step) on:
    G~    = P_L G P_R  per block,  G~ <- G~ ||G||_F / (||G~||_F + 1e-12)   (norm grafting)
  then AdamW on G~:  p <- p (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps).

``B(V) = 1.5 V - 0.5 V V^T V`` is Björck's orthonormalization step. ``Q``/``D`` are the
block-wise quantizer pair below: each row of a matrix (each eigenvector, as ``V^T`` is what the
official code stores) is cut into blocks of ``quan_blocksize`` entries, scaled by the block's
largest magnitude and rounded to the nearest of ``2^bits`` levels; 4-bit codes are packed two to
a byte. Levels: ``"linear-2"`` (linear square, the official default) or ``"dynamic"`` (dynamic
tree). Matrices with fewer than ``min_lowbit_size`` entries, and every matrix when
``prec_bits=32``, are kept in full precision and not rectified (the official 32-bit mode:
eigenvectors still come from the warm-started QR step, not an exact eigendecomposition).

Defaults are the official ``ShampooAdamW``'s (lr 1e-3, betas (0.9, 0.999), eps 1e-8,
weight_decay 0 (decoupled), start_prec_step 1, stat_compute_steps 100, prec_compute_steps
500, stat_decay 0.95, matrix_eps 1e-6, prec_maxorder 1200, min_lowbit_size 4096,
quan_blocksize 64, rect_t1 1, rect_t2 4, linear-2 levels), except prec_bits: 4 (the paper and
the official demo) instead of the class's 32. Deliberate departures: statistics are kept in
float64 for float64 parameters (float32 otherwise, as the official code) and the preconditioned
gradient is formed in that precision; for bf16/fp16 parameters the AdamW moments and the step
are float32 too (rounded to the parameter's dtype once; in float16 ``g^2`` and eps 1e-8
underflow and the step gave NaN); the block-wise quantizer is pure torch (the official one
is a CUDA kernel; codes and scales agree up to ties at exact midpoints). Not implemented: the
ShampooSGD variant, the Schur-Newton inverse root (``inv_root_mode=1``) and 16-bit storage.
State is created on the first update (its layout depends on the hyperparameters).
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from ..capabilities import Capabilities
from ..helpers import compute_dtype, mode_gram
from ..rule import UpdateRule
from .adam import adam_direction
from .checks import check_betas, check_choice, check_int, check_min, check_unit
from .registry import member_rule, register

LEVEL_MAPS = ("linear-2", "dynamic")
BITS = (4, 8, 32)
GRAFT_EPS = 1e-12


# ----------------------------------------------------------------------------- quantizer
@lru_cache(maxsize=None)
def quantization_levels(kind: str, bits: int) -> Tensor:
    """The ``2^bits`` sorted levels in ``[-1, 1]`` (float64), as the official
    ``create_linear_map(power=2)`` / ``create_dynamic_map`` build them.

    linear-2: ``sign(x) x^2`` over ``x = linspace(-1, 1, 2^bits)`` with its entry just below
    zero set to 0 (so 0 is a level; the map has one more positive level than negative).
    dynamic: for ``i < bits - 1``, the midpoints of ``2^i + 1`` points evenly spaced in
    ``[0.1, 1]``, scaled by ``10^(i - bits + 2)``, with both signs; plus 0 and 1.
    """
    if kind == "linear-2":
        x = torch.linspace(-1, 1, 2**bits, dtype=torch.float64)
        x = torch.where(torch.arange(2**bits) == 2 ** (bits - 1) - 1, 0.0, x)
        return x.sign() * x * x
    values = [0.0, 1.0]
    for i in range(bits - 1):
        edges = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float64)
        means = (edges[:-1] + edges[1:]) / 2 * 10.0 ** (i - bits + 2)
        values += means.tolist() + (-means).tolist()
    return torch.tensor(sorted(values), dtype=torch.float64)


def _pack(idx: Tensor, bits: int) -> Tensor:
    """Level indices (flat) as bytes; two 4-bit codes a byte, the first in the low nibble."""
    if bits == 8:
        return idx.to(torch.uint8)
    idx = torch.nn.functional.pad(idx, (0, idx.numel() % 2))
    return (idx[0::2] | (idx[1::2] << 4)).to(torch.uint8)


def _unpack(codes: Tensor, numel: int, bits: int) -> Tensor:
    c = codes.long()
    if bits == 8:
        return c
    return torch.stack([c & 15, c >> 4], -1).reshape(-1)[:numel]


def quantize(x: Tensor, levels: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """Block-wise quantization of a matrix ``x`` (n x m): each row is cut into blocks of
    ``block`` entries; a block is divided by its largest magnitude ``absmax`` and each entry
    rounded to the nearest level. Returns the packed codes (uint8, ``ceil(n m / 2)`` bytes for
    16 levels) and ``absmax`` (n x ceil(m / block)). An all-zero block has ``absmax`` 0."""
    n, m = x.shape
    nb = -(-m // block)
    xb = torch.nn.functional.pad(x, (0, nb * block - m)).reshape(n, nb, block)
    absmax = xb.abs().amax(-1)
    scaled = xb / torch.where(absmax > 0, absmax, 1)[..., None]
    midpoints = (levels[1:] + levels[:-1]) / 2
    idx = torch.bucketize(scaled.contiguous(), midpoints).reshape(n, nb * block)[:, :m]
    return _pack(idx.reshape(-1), levels.numel().bit_length() - 1), absmax


def dequantize(codes: Tensor, absmax: Tensor, levels: Tensor, shape: tuple[int, int],
               block: int) -> Tensor:
    """Inverse of :func:`quantize`: ``levels[code] * absmax`` of the entry's block."""
    n, m = shape
    idx = _unpack(codes, n * m, levels.numel().bit_length() - 1).reshape(n, m)
    return levels[idx] * absmax.repeat_interleave(block, dim=1)[:, :m]


def quantize_offdiag(x: Tensor, levels: Tensor, block: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(codes, absmax, diag)``: the diagonal of a square matrix kept in full precision and
    the rest quantized (the paper's ``(a, Q(A - diag(a)))`` for the inverse root)."""
    diag = x.diagonal()
    codes, absmax = quantize(x - torch.diag_embed(diag), levels, block)
    return codes, absmax, diag


def dequantize_offdiag(codes: Tensor, absmax: Tensor, diag: Tensor, levels: Tensor,
                       block: int) -> Tensor:
    """Inverse of :func:`quantize_offdiag` (0 is a level, so the quantized diagonal is 0)."""
    n = diag.shape[-1]
    return dequantize(codes, absmax, levels, (n, n), block) + torch.diag_embed(diag)


def bjorck(v: Tensor, iters: int) -> Tensor:
    """``iters`` steps of Björck orthonormalization ``V <- 1.5 V - 0.5 V V^T V``."""
    for _ in range(iters):
        v = 1.5 * v - 0.5 * v @ (v.mT @ v)
    return v


# ----------------------------------------------------------------------------- layout
def matrix_shape(shape: torch.Size) -> tuple[int, int] | None:
    """The official matrix view: size-1 dimensions dropped, then ``(d_0, rest)``; None
    (no preconditioner) when fewer than two dimensions remain."""
    dims = [d for d in shape if d != 1]
    if len(dims) < 2:
        return None
    return dims[0], int(torch.Size(dims[1:]).numel())


def _split(n: int, size: int) -> list[int]:
    return [size] * (n // size) + ([n % size] if n % size else [])


def partition(mat: Tensor, max_order: int) -> list[Tensor]:
    """Blocks of at most ``max_order`` rows and columns, row-major."""
    return [blk for rows in mat.split(max_order, 0) for blk in rows.split(max_order, 1)]


def merge(blocks: list[Tensor], shape: tuple[int, int], max_order: int) -> Tensor:
    """Inverse of :func:`partition`."""
    ncol = len(_split(shape[1], max_order))
    rows = [torch.cat(blocks[i:i + ncol], 1) for i in range(0, len(blocks), ncol)]
    return torch.cat(rows, 0)


def _block_shapes(shape: tuple[int, int], max_order: int) -> list[tuple[int, int]]:
    return [(r, c) for r in _split(shape[0], max_order) for c in _split(shape[1], max_order)]


# ----------------------------------------------------------------------------- factors
def _levels(hp, n: int, like: Tensor) -> Tensor | None:
    """The levels an n x n factor is quantized to, or None when it is kept in full precision."""
    if hp["prec_bits"] == 32 or n * n < hp["min_lowbit_size"]:
        return None
    return quantization_levels(hp["quan_map"], hp["prec_bits"]).to(like.device, like.dtype)


def _store_eigvecs(key: str, v: Tensor, levels: Tensor | None, hp) -> dict:
    """Eigenvectors (columns of ``v``) stored as the rows of ``V^T``, quantized when asked."""
    if levels is None:
        return {f"eigvecs_{key}": v.mT.contiguous()}
    codes, absmax = quantize(v.mT, levels, hp["quan_blocksize"])
    return {f"eigvecs_{key}": codes, f"eigvecs_absmax_{key}": absmax}


def _load_eigvecs(state, key: str, n: int, levels: Tensor | None, hp, rect: int) -> Tensor:
    """``V`` (eigenvectors as columns); dequantized and rectified by ``rect`` Björck steps."""
    if levels is None:
        return state[f"eigvecs_{key}"].mT
    vt = dequantize(state[f"eigvecs_{key}"], state[f"eigvecs_absmax_{key}"], levels, (n, n),
                    hp["quan_blocksize"])
    return bjorck(vt.mT, rect)


def _store_root(key: str, root: Tensor, levels: Tensor | None, hp) -> dict:
    if levels is None:
        return {f"root_{key}": root}
    codes, absmax, diag = quantize_offdiag(root, levels, hp["quan_blocksize"])
    return {f"root_{key}": codes, f"root_absmax_{key}": absmax, f"root_diag_{key}": diag}


def _load_root(state, key: str, levels: Tensor | None, hp) -> Tensor:
    if levels is None:
        return state[f"root_{key}"]
    return dequantize_offdiag(state[f"root_{key}"], state[f"root_absmax_{key}"],
                              state[f"root_diag_{key}"], levels, hp["quan_blocksize"])


def accumulate(state, key: str, stat: Tensor, hp) -> dict:
    """Rebuild the statistic from (V, lam), add ``stat`` with the decay, and re-estimate its
    eigenvectors by one QR step warm-started from V."""
    n = stat.shape[0]
    levels = _levels(hp, n, stat)
    v = _load_eigvecs(state, key, n, levels, hp, hp["rect_t1"])
    b = hp["stat_decay"]
    a = b * (v * state[f"eigvals_{key}"]) @ v.mT + (1.0 if b == 1 else 1 - b) * stat
    v, _ = torch.linalg.qr(a @ v)
    lam = (v * (a @ v)).sum(0)  # diag(V^T A V)
    return {**_store_eigvecs(key, v, levels, hp), f"eigvals_{key}": lam}


def inverse_fourth_root(state, key: str, n: int, like: Tensor, hp) -> dict:
    """``P = V diag(lam + matrix_eps max(lam))^{-1/4} V^T`` from the rectified eigenvectors."""
    levels = _levels(hp, n, like)
    v = _load_eigvecs(state, key, n, levels, hp, hp["rect_t2"])
    lam = state[f"eigvals_{key}"]
    root = (v * (lam + hp["matrix_eps"] * lam.max()) ** -0.25) @ v.mT
    return _store_root(key, root, levels, hp)


def _first_state(p: Tensor, hp) -> dict:
    dt = compute_dtype(p.dtype)
    state = {"exp_avg": torch.zeros_like(p, dtype=dt), "exp_avg_sq": torch.zeros_like(p, dtype=dt)}
    shape = matrix_shape(p.shape)
    if shape is None:
        return state
    for b, sides in enumerate(_block_shapes(shape, hp["prec_maxorder"])):
        for s, n in enumerate(sides):
            eye = torch.eye(n, dtype=dt, device=p.device)
            levels = _levels(hp, n, eye)
            state.update(_store_eigvecs(f"{b}_{s}", eye, levels, hp))
            state[f"eigvals_{b}_{s}"] = torch.full((n,), hp["matrix_eps"], dtype=dt,
                                                   device=p.device)
            state.update(_store_root(f"{b}_{s}", eye, levels, hp))
    return state


def shampoo_direction(g: Tensor, state: dict, hp, step: int) -> tuple[Tensor, dict]:
    """Update the factors due this step; return the grafted preconditioned gradient (``g``
    itself before the first inverse roots) and the updated factor entries of the state."""
    shape = matrix_shape(g.shape)
    mat = g.to(compute_dtype(g.dtype)).reshape(shape)
    order = hp["prec_maxorder"]
    blocks = partition(mat, order)
    keys = [(f"{b}_{s}", blk, s) for b, blk in enumerate(blocks) for s in (0, 1)]
    factors = {}
    if step % hp["stat_compute_steps"] == 0:
        for key, blk, s in keys:
            factors.update(accumulate(state, key, mode_gram(blk, s), hp))
    if step % hp["prec_compute_steps"] == 0:
        for key, blk, s in keys:
            factors.update(inverse_fourth_root({**state, **factors}, key, blk.shape[s], mat, hp))
    if step < max(hp["prec_compute_steps"], hp["start_prec_step"]):
        return g, factors
    current = {**state, **factors}
    roots = [_load_root(current, key, _levels(hp, blk.shape[s], mat), hp) for key, blk, s in keys]
    d = merge([roots[2 * b] @ blk @ roots[2 * b + 1] for b, blk in enumerate(blocks)], shape, order)
    d = d * (mat.norm() / (d.norm() + GRAFT_EPS))
    return d.reshape(g.shape).to(g.dtype), factors


# ----------------------------------------------------------------------------- rule
def _init(p):
    return {}


def _update(g, p, state, hp, step):
    state = dict(state) if state else _first_state(p, hp)
    step, dtype = int(step), p.dtype
    g, p = g.to(compute_dtype(dtype)), p.to(compute_dtype(dtype))  # bf16/fp16: in float32
    if matrix_shape(p.shape) is not None:
        g, factors = shampoo_direction(g, state, hp, step)
        state.update(factors)
    d, moments = adam_direction(g, state, hp, step)
    state.update(moments)
    return (hp["lr"] * (d + hp["weight_decay"] * p)).to(dtype), state


def _check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2)
    check_min(hp, "eps")
    check_min(hp, "weight_decay")
    check_unit(hp, "stat_decay", closed=True)
    check_min(hp, "matrix_eps", strict=True)
    for key in ("start_prec_step", "stat_compute_steps", "prec_compute_steps", "prec_maxorder",
                "quan_blocksize"):
        check_int(hp, key, 1)
    for key in ("min_lowbit_size", "rect_t1", "rect_t2"):
        check_int(hp, key, 0)
    check_choice(hp, "prec_bits", BITS)
    check_choice(hp, "quan_map", LEVEL_MAPS)


@register("shampoo4bit",
          sample={"stat_compute_steps": 1, "prec_compute_steps": 1, "min_lowbit_size": 0,
                  "prec_maxorder": 3, "weight_decay": 0.05})
def shampoo4bit() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
            "start_prec_step": 1, "stat_compute_steps": 100, "prec_compute_steps": 500,
            "stat_decay": 0.95, "matrix_eps": 1e-6, "prec_maxorder": 1200, "prec_bits": 4,
            "min_lowbit_size": 4096, "quan_blocksize": 64, "rect_t1": 1, "rect_t2": 4,
            "quan_map": "linear-2"},
        check=_check, caps=Capabilities(elementwise=False),
    )
