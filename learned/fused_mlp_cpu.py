"""The fused MLPLOpt step on a CPU: two C passes per tensor, compiled once per configuration in
about a second and cached on disk.

:mod:`learned.fused_mlp` writes the MLP unit by unit for Inductor, but on a CPU Inductor splits
that graph into several loops that write the hidden units back to memory (it realises any value
read more than a few times), and compiles it for 1-2 minutes. Here the same step is two loops of
plain C (``fused_mlp_cpu.c``), vectorised by the C compiler over blocks of 16 coordinates:

1. ``lo_moments``: the moments ``m_1, m_2, m_3, v`` updated in place and, in the same pass, the
   sums of squares of the 15 per-coordinate features and of Adam's direction (in double);
2. ``lo_mlp_step``: features, MLP and ``p <- p - d * exp(exp_mult * m) * mult`` in registers,
   with the per-tensor normalisers ``rsqrt(mean(x^2) + 1e-5)`` folded into the first layer's
   weights (``w0[k, j] * norm_k``).

The row and column statistics (Adafactor's factored second moment) and everything per tensor are
torch ops on small vectors, exactly as in :func:`learned.features.update_state`. The result
equals :meth:`learned.MLPLOpt.update` up to the order of float rounding (sums taken per thread
and in double; ``tests/learned/test_learned_fused_mlp_cpu.py``).

Per coordinate the MLP costs ``NIN H + (layers - 1) H^2 + 2 H`` multiply-adds
(:func:`mlp_multiply_adds`; 560 for H = 16, two layers, no Adam feature): at 16 float FMAs per cycle (two 256-bit FMA units) that is a floor
of about 35 cycles per coordinate, ~20x a memory-bound fused AdamW step on a CPU whose memory
gives AdamW ~2 cycles per coordinate. ``experiments/gpu_learned.py --cpu`` measures it.

A kernel is built with the system C compiler and OpenMP, cached on disk and loaded with
:mod:`ctypes` by :mod:`metaopt.cbuild` (the configuration is part of its flags, so of its
cache key). Without a compiler,
:func:`available` is false and :mod:`learned.fused_mlp` keeps its Inductor path.
"""
from __future__ import annotations

import ctypes
import functools
import warnings
from pathlib import Path

import torch
from torch import Tensor

from metaopt import cbuild

from .features import (ADAM_RMS_EPS, DECAYS, EPS, NORM_EPS, RMS_DECAY, matrix_shape,
                       tensor_features, update_factored)

SOURCE = Path(__file__).with_name("fused_mlp_cpu.c")
FLAGS = ("-O2", "-march=native", "-funroll-loops", "-fno-math-errno", "-fopenmp", "-shared",
         "-fPIC")
DTYPES = {torch.float32: "float", torch.float64: "double"}
N_SUMS = 16  # lo_moments' sums: 15 coordinate features, then Adam's direction
_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int


def available() -> bool:
    """Whether this machine can build the kernels (a C compiler is on the PATH)."""
    return cbuild.available()


def supports(p: Tensor, g: Tensor) -> bool:
    """Whether the C step applies to this tensor: CPU, float32/float64, contiguous, with a
    gradient of the same dtype."""
    return (p.device.type == "cpu" and p.dtype in DTYPES and g.dtype == p.dtype
            and p.is_contiguous() and g.is_contiguous() and available())


def mlp_multiply_adds(lopt) -> int:
    """Multiply-adds of ``lopt``'s MLP per coordinate: ``NIN H + (layers - 1) H^2 + 2 H``."""
    h = lopt.hidden
    return lopt.n_features * h + (lopt.layers - 1) * h * h + 2 * h


@functools.lru_cache(maxsize=None)
def kernels(dtype: torch.dtype, hidden: int, layers: int, n_in: int) -> ctypes.CDLL:
    """The compiled kernels for one configuration (built on first use, then from the cache)."""
    defines = (f"-DSCALAR={DTYPES[dtype]}", f"-DSCALAR_IS_DOUBLE={int(dtype == torch.float64)}",
               f"-DHID={hidden}", f"-DLAYERS={layers}", f"-DNIN={n_in}")
    lib = cbuild.load(SOURCE.read_text(), FLAGS + defines, "lo_mlp", "learned.fused_mlp_cpu")
    lib.lo_moments.argtypes = [_I64, _I64] + [_P] * 10 + [_INT]
    lib.lo_mlp_step.argtypes = [_I64, _I64] + [_P] * 16 + [_INT]
    return lib


@functools.lru_cache(maxsize=None)
def kernels_or_none(dtype: torch.dtype, hidden: int, layers: int, n_in: int):
    """:func:`kernels`, or None (with one warning) when they cannot be built or loaded here
    (compiler error, unwritable cache folder): the caller then takes another path."""
    try:
        return kernels(dtype, hidden, layers, n_in)
    except (RuntimeError, OSError) as e:
        warnings.warn(f"learned.fused_mlp_cpu: C kernels unavailable ({e}); using the "
                      f"Inductor path", RuntimeWarning, stacklevel=3)
        return None


def _ptr(x: Tensor) -> int:
    return x.data_ptr()


def tensor_step(lopt, weights: tuple[Tensor, ...], g: Tensor, p: Tensor,
                state: dict[str, Tensor], step: int, mult: float) -> bool:
    """One MLPLOpt step of one tensor in place (``p`` and ``state``); ``weights`` as
    :func:`learned.fused_mlp.theta_weights` (the parameters' dtype), ``mult`` the step
    multiplier ``step_mult * s(info)``. False (nothing done) when the kernels are unavailable."""
    dtype, (r, c) = p.dtype, matrix_shape(p.shape)
    lib = kernels_or_none(dtype, lopt.hidden, lopt.layers, lopt.n_features)
    if lib is None:
        return False
    nthreads = cbuild.threads(torch.get_num_threads())
    row, col = state["row"], state["col"]
    new_row, new_col = update_factored(g, row, col)
    row.copy_(new_row)
    col.copy_(new_col)
    rm = row.mean()
    bc1, bc2 = 1 - DECAYS[0] ** step, 1 - RMS_DECAY ** step
    consts = [float(rm), bc1, bc2 ** 0.5, 0.0, lopt.exp_mult, EPS,
              *(1 - b for b in DECAYS), 1 - RMS_DECAY]
    sc = torch.tensor(consts, dtype=dtype)
    sums = torch.zeros(N_SUMS, dtype=torch.float64)
    lib.lo_moments(r, c, _ptr(g), _ptr(p), *(_ptr(state[k]) for k in ("m1", "m2", "m3", "v")),
                   _ptr(row), _ptr(col), _ptr(sc), _ptr(sums), nthreads)
    n = r * c
    rr, cc = torch.rsqrt(row + EPS), torch.rsqrt(col + EPS)
    means = torch.cat([sums[:15].to(dtype) / n, torch.stack([(rr * rr).mean(),
                                                             (cc * cc).mean()])])
    norms = torch.rsqrt(means + NORM_EPS)
    w0, wt, b0 = weights[0], weights[1], weights[2]
    w0f = w0.clone()
    w0f[:len(norms)] *= norms[:, None]
    if lopt.adam_feature and lopt.adam_scale:
        rms = torch.sqrt(sums[15].to(dtype) / n + ADAM_RMS_EPS)  # features.adam_rms
        w0f[len(norms)] /= rms
        mult = mult * float(rms)
    bias = b0 + tensor_features(g, p, step, lopt.scale_features, lopt.taus) @ wt
    hidden = weights[3:-2]
    wh = torch.stack(list(hidden[0::2])).contiguous() if hidden else torch.zeros(1, dtype=dtype)
    bh = torch.stack(list(hidden[1::2])).contiguous() if hidden else torch.zeros(1, dtype=dtype)
    sc[3] = mult
    lib.lo_mlp_step(r, c, _ptr(g), _ptr(p), *(_ptr(state[k]) for k in ("m1", "m2", "m3", "v")),
                    _ptr(row), _ptr(col), _ptr(cc), _ptr(sc), _ptr(w0f.contiguous()),
                    _ptr(bias.contiguous()), _ptr(wh), _ptr(bh),
                    _ptr(weights[-2].contiguous()), _ptr(weights[-1].contiguous()), nthreads)
    return True
