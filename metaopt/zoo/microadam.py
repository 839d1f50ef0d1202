"""MicroAdam: Adam over a sliding window of Top-K gradients, with 4-bit error feedback.

Modoranu, Safaryan, Malinovsky, Kurtic, Robert, Richtarik, Alistarh, "MicroAdam: Accurate
Adaptive Optimization with Low Space Overhead and Provable Convergence" (NeurIPS 2024,
arXiv 2405.15593), Algorithm 1, per tensor of ``d`` entries with ``k = ceil(k_init d)``:

    a_t         = g_t + Q^{-1}(e_t, delta_t, Delta_t)           add the error feedback
    (I_t, V_t)  = Top-K of |a_t| (indices, signed values a_t[I_t])
    a_t[I_t]    = 0                                              the residual
    delta_{t+1}, Delta_{t+1} = per-block min, max of a_t
    e_{t+1}     = Q(a_t, delta_{t+1}, Delta_{t+1})               4-bit error feedback
    row (t - 1) mod m of the window <- (I_t, V_t)                ring buffer of m rows
    m_t = (1 - b1) / (1 - b1^t) sum_rows b1^r scatter(I, V)      r = age of the row in steps
    v_t = (1 - b2) / (1 - b2^t) sum_rows b2^r scatter(I, V^2)    (the paper's ADAMSTATS)
    p_t = p_{t-1} - lr (m_t / (eps + sqrt(v_t)) + wd p_{t-1})

``Q`` is the paper's asymmetric ``b = 4``-bit quantizer per block of ``quant_block_size``
entries: ``u = (Delta - delta) / 15``, ``Q(x) = floor((x - delta) / u + 1/2)``,
``Q^{-1}(q) = delta + u q``; a block with ``Delta == delta`` stores code 0 (and ``Q^{-1}``
gives back ``delta`` exactly). Rows of the window not yet written hold zeros and add nothing,
so the sums run over the ``min(t, m)`` gradients seen. With ``k_init = 1`` the residual is 0,
``e`` stays 0, and the moments are Adam's restricted to the last ``m`` gradients (Adam's own
for ``t <= m``).

Official code: IST-DASLab/ISTA-DASLab-Optimizers, ``ista_daslab_optimizers/micro_adam/``
(CUDA kernels in ``kernels/cuda_micro_adam/``). Its constructor has no defaults for ``m``,
``lr`` and ``quant_block_size``; ours are ``m`` 10, ``quant_block_size`` 100000 and
``k_init`` 0.01 of the paper's runs (IST-DASLab/MicroAdam's GLUE and GSM8k scripts), ``lr``
1e-3 of the optimizers repository's CIFAR-10 example, and its betas (0.9, 0.999), eps 1e-8,
weight decay 0 (decoupled: ``p <- p (1 - lr wd)`` as in the official step).

State (created on the first update, its shapes depend on the hyperparameters):
``window_indices`` (m, k) int32 (int64 beyond 2^31 entries), ``window_values`` (m, k),
``ef_codes`` uint8 with two 4-bit codes per byte (the first entry in the high nibble, as the
official kernels pack), ``ef_min`` / ``ef_max`` per block. Floating state is kept in the
parameter's dtype (the official code keeps values and block ranges in bf16); for bf16/fp16
parameters the arithmetic runs in float32. The ring position is ``(t - 1) mod m``, derived
from the step count rather than stored.

Departures from the official code, following the paper: Top-K is over the whole tensor (the
kernels take it per block of a GPU-shared-memory size), indices are int32 (int16 there,
relative to those blocks), codes are clamped to [0, 15] (bf16-rounded block ranges can put an
entry just outside them), and the ``alpha`` densification options of later versions, which
the paper does not have, are left out.

``impl="compiled"`` (never chosen by ``"auto"`` for this non-elementwise rule) is wrong on CPU
with torch 2.13: Inductor miscompiles a block statistic broadcast over a length that is not a
multiple of the block (``lo[torch.arange(30) // 16] + x``), which the error feedback needs.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..capabilities import Capabilities
from ..helpers import compute_dtype
from ..rule import UpdateRule
from ._sqrt import sqrt0
from .checks import check_betas, check_int, check_min, check_unit
from .registry import member_rule, register

BITS = 4
LEVELS = 2**BITS - 1  # the largest code


def topk_count(numel: int, k_init: float) -> int:
    """``k = ceil(k_init d)`` entries kept per step (at most ``d``)."""
    return min(numel, math.ceil(k_init * numel))

def index_dtype(numel: int) -> torch.dtype:
    return torch.int32 if numel < 2**31 else torch.int64


def _blocks(x: Tensor, block_size: int) -> Tensor:
    """``x`` (1-D) as rows of ``min(block_size, d)`` entries; the last row is padded with
    copies of the last entry, which leave its min and max unchanged."""
    size = min(block_size, x.numel())
    n = -(-x.numel() // size)
    pad = n * size - x.numel()
    if pad:
        x = torch.cat([x, x[-1:].expand(pad)])
    return x.reshape(n, size)


def quantize(x: Tensor, block_size: int, stat_dtype: torch.dtype
             ) -> tuple[Tensor, Tensor, Tensor]:
    """``(codes, delta, Delta)``: 4-bit codes of ``x`` (1-D) against the min and max of each
    block. The ranges are rounded to ``stat_dtype`` (the dtype they are stored in) before
    use, so that quantizing and dequantizing see the same numbers."""
    rows = _blocks(x, block_size)
    lo = rows.amin(1).to(stat_dtype).to(x.dtype)
    hi = rows.amax(1).to(stat_dtype).to(x.dtype)
    unit = ((hi - lo) / LEVELS)[:, None]
    flat = unit > 0
    scaled = (rows - lo[:, None]) / torch.where(flat, unit, 1)
    codes = torch.where(flat, torch.floor(scaled + 0.5).clamp(0, LEVELS), 0)
    return codes.to(torch.uint8).reshape(-1)[:x.numel()], lo, hi


def add_dequantized(x: Tensor, codes: Tensor, lo: Tensor, hi: Tensor, block_size: int
                    ) -> Tensor:
    """``x + Q^{-1}(codes)``: ``Q^{-1}(q) = delta + u q`` with ``u = (Delta - delta) / 15``
    of each entry's block (``x`` and ``codes`` 1-D)."""
    rows = _blocks(codes, block_size).to(lo.dtype)
    values = _blocks(x, block_size) + (lo[:, None] + ((hi - lo) / LEVELS)[:, None] * rows)
    return values.reshape(-1)[:x.numel()]


def pack_nibbles(codes: Tensor) -> Tensor:
    """Two 4-bit codes per byte, the even entry in the high nibble (``ceil(d / 2)`` bytes)."""
    if codes.numel() % 2:
        codes = torch.cat([codes, codes.new_zeros(1)])
    pairs = codes.reshape(-1, 2)
    return pairs[:, 0] * 16 + pairs[:, 1]


def unpack_nibbles(packed: Tensor, numel: int) -> Tensor:
    """The ``numel`` codes stored by :func:`pack_nibbles`."""
    return torch.stack([packed // 16, packed % 16], dim=1).reshape(-1)[:numel]


def _first_state(p: Tensor, hp) -> dict:
    d, m = p.numel(), hp["m"]
    k = topk_count(d, hp["k_init"])
    n_blocks = -(-d // min(hp["quant_block_size"], d))
    return {
        "window_indices": torch.zeros(m, k, dtype=index_dtype(d), device=p.device),
        "window_values": torch.zeros(m, k, dtype=p.dtype, device=p.device),
        "ef_codes": torch.zeros(-(-d // 2), dtype=torch.uint8, device=p.device),
        "ef_min": torch.zeros(n_blocks, dtype=p.dtype, device=p.device),
        "ef_max": torch.zeros(n_blocks, dtype=p.dtype, device=p.device),
    }


def compress(a: Tensor, k: int, block_size: int, stat_dtype: torch.dtype) -> tuple:
    """Top-K of ``|a|`` and the 4-bit error feedback of the rest:
    ``(indices, values, packed codes, delta, Delta)``."""
    idx = torch.topk(a.abs(), k).indices
    values = a.gather(0, idx)
    residual = a.scatter(0, idx, torch.zeros_like(values))
    codes, lo, hi = quantize(residual, block_size, stat_dtype)
    return idx, values, pack_nibbles(codes), lo, hi


def window_moments(indices: Tensor, values: Tensor, numel: int, hp, step) -> tuple:
    """The paper's ADAMSTATS: bias-corrected ``m_t``, ``v_t`` from the window, each row
    weighted by ``beta^age`` (the row written at step ``s`` has age ``t - s``)."""
    b1, b2 = hp["betas"]
    m = indices.shape[0]
    rows = torch.arange(m, device=values.device)
    ages = ((step - 1 - rows) % m).to(values.dtype)
    flat_idx = indices.reshape(-1).long()
    zeros = values.new_zeros(numel)
    m_sum = zeros.scatter_add(0, flat_idx, (torch.pow(b1, ages)[:, None] * values).reshape(-1))
    v_sum = zeros.scatter_add(
        0, flat_idx, (torch.pow(b2, ages)[:, None] * values * values).reshape(-1))
    return (1 - b1) / (1 - b1**step) * m_sum, (1 - b2) / (1 - b2**step) * v_sum


def _write_row(window: Tensor, row: Tensor, step) -> Tensor:
    """``window`` with row ``(step - 1) mod m`` replaced by ``row`` (out of place)."""
    m = window.shape[0]
    is_slot = torch.arange(m, device=window.device) == (step - 1) % m
    return torch.where(is_slot[:, None], row.to(window.dtype)[None], window)


def _update(g, p, state, hp, step):
    state = state if state else _first_state(p, hp)
    dt, d = compute_dtype(p.dtype), p.numel()
    block = hp["quant_block_size"]
    a = add_dequantized(g.reshape(-1).to(dt), unpack_nibbles(state["ef_codes"], d),
                        state["ef_min"].to(dt), state["ef_max"].to(dt), block)
    k = state["window_indices"].shape[1]
    idx, values, codes, lo, hi = compress(a, k, block, p.dtype)
    new = {
        "window_indices": _write_row(state["window_indices"], idx, step),
        "window_values": _write_row(state["window_values"], values, step),
        "ef_codes": codes, "ef_min": lo.to(p.dtype), "ef_max": hi.to(p.dtype),
    }
    m_hat, v_hat = window_moments(new["window_indices"], new["window_values"].to(dt), d, hp,
                                  step)
    direction = (m_hat / (sqrt0(v_hat) + hp["eps"])).reshape(p.shape)
    return (hp["lr"] * (direction + hp["weight_decay"] * p.to(dt))).to(p.dtype), new


def _init(p):
    return {}


def _check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2)
    check_min(hp, "eps", strict=True)
    check_min(hp, "weight_decay")
    check_min(hp, "k_init", strict=True)
    check_unit(hp, "k_init", closed=True)
    check_int(hp, "m", 1)
    check_int(hp, "quant_block_size", 1)


@register("microadam", sample={"k_init": 0.2, "quant_block_size": 4, "m": 2, "weight_decay": 0.05})
def microadam() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "m": 10,
            "k_init": 0.01, "quant_block_size": 100_000},
        check=_check, caps=Capabilities(elementwise=False),
    )
