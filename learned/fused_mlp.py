"""A fused step of :class:`learned.MLPLOpt`: moments, feature statistics, features, MLP and the
parameter update for one tensor in a few compiled kernels, no ``[numel x features]`` tensor.

The eager step (:meth:`MLPLOpt.update`) builds the 17 features of a block of coordinates as a
``[rows, 17]`` matrix and runs the MLP as matrix products, so every hidden layer is written to
and read back from memory: for a ``hidden``-unit MLP that is ``(17 + 2 hidden)`` floats of traffic
per coordinate and layer, which is why a naive LO step costs ~100x a fused AdamW step
(PyLO, Thérien et al. 2025, needed hand-written CUDA kernels for its 7.6x).

Here the MLP is written out unit by unit as scalar expressions of the features,

    h^1_j = relu(b_j + sum_i w_ij x_i),   h^{l+1}_j = relu(b^l_j + sum_i w^l_ij h^l_i),
    direction = sum_j w^out_j0 h_j + b^out_0,  magnitude = sum_j w^out_j1 h_j + b^out_1,

so that ``torch.compile`` (Inductor) emits one pointwise kernel per tensor that loads
``g, p, m1, m2, m3, v`` (and the row/column factors) once, keeps every feature and hidden unit
in registers, and writes ``p, m1, m2, m3, v`` once; the per-tensor feature normalisers (17
sums of squares) are one fused reduction kernel before it, and the Adafactor row/column means
one more. Memory traffic is then that of an Adam-like step (about 11 floats per coordinate
plus a 6-float read for the statistics); the MLP's ``17 H + (layers - 1) H^2 + 2 H``
multiply-adds per coordinate are compute that a GPU hides behind it for small ``H``.

The result equals :meth:`MLPLOpt.update` up to float rounding (the sums are taken in another
order); ``tests/learned/test_learned_fused_mlp.py`` checks it eagerly and compiled.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from typing import Callable, Sequence

import torch
from torch import Tensor

from metaopt.hoist import compile_options

from . import fused_mlp_cpu
from .base import Theta, as_param_info
from .features import EPS, NORM_EPS, adam_direction, adam_rms, matrix_shape, update_state


def _dot(xs: Sequence[Tensor], w: Tensor, j: int) -> Tensor:
    """``sum_i xs[i] * w[i, j]`` as a chain of pointwise multiply-adds."""
    acc = xs[0] * w[0, j]
    for i in range(1, len(xs)):
        acc = acc + xs[i] * w[i, j]
    return acc


def _layer(xs: Sequence[Tensor], w: Tensor, bias: Tensor) -> list[Tensor]:
    """One ReLU layer, unit by unit."""
    return [torch.relu(_dot(xs, w, j) + bias[j]) for j in range(w.shape[1])]


def tensor_step(g: Tensor, p: Tensor, m1: Tensor, m2: Tensor, m3: Tensor, v: Tensor,
                row: Tensor, col: Tensor, t: Tensor, mult: Tensor, weights: Sequence[Tensor],
                *, exp_mult: float, scale_features: bool, adam_feature: bool,
                adam_scale: bool, taus: tuple[float, ...]) -> tuple[Tensor, ...]:
    """One MLPLOpt step of one tensor, out of place: returns ``(p, m1, m2, m3, v, row, col)``.

    ``weights`` are ``(w0, wt, b0, w1, b1, ..., w_out, b_out)``; ``t`` is the step (0-d),
    ``mult`` the step multiplier ``step_mult * s(info)`` (0-d); the keywords are the LO's
    options (see :class:`learned.MLPLOpt`).
    """
    shape = p.shape
    r, c = matrix_shape(shape)
    new = update_state(g, {"m1": m1, "m2": m2, "m3": m3, "v": v, "row": row, "col": col})
    m1, m2, m3, v = (new[k].reshape(r, c) for k in ("m1", "m2", "m3", "v"))
    row, col = new["row"], new["col"]
    g, p = g.reshape(r, c), p.reshape(r, c)

    a = torch.rsqrt(v + EPS)
    b = torch.rsqrt(row[:, None] * col[None, :] / (row.mean() + EPS) + EPS)
    rr, cc = torch.rsqrt(row + EPS), torch.rsqrt(col + EPS)
    coords = [g, p, m1, m2, m3, torch.sqrt(v + EPS), m1 * a, m2 * a, m3 * a, a,
              b, g * b, m1 * b, m2 * b, m3 * b]
    n = r * c
    # the normalisers rsqrt(mean(x^2) + 1e-5) over the tensor; row/column features are
    # constant along a dimension, so their means are over the vectors
    norms = [torch.rsqrt((x * x).sum() / n + NORM_EPS) for x in coords]
    norms += [torch.rsqrt((rr * rr).mean() + NORM_EPS), torch.rsqrt((cc * cc).mean() + NORM_EPS)]
    xs = [x * s for x, s in zip(coords, norms)]
    xs += [(rr * norms[-2])[:, None], (cc * norms[-1])[None, :]]
    if adam_feature:  # Adam's bias-corrected direction, normalised only with adam_scale
        adam = adam_direction(new, t).reshape(r, c)
        if adam_scale:
            rms = adam_rms(adam)
            adam, mult = adam / rms, mult * rms
        xs.append(adam)

    w0, wt, b0 = weights[0], weights[1], weights[2]
    per_tensor = torch.tanh(t / torch.tensor(taus, dtype=g.dtype, device=g.device) - 1)
    if scale_features:
        sq = torch.stack([(g * g).mean(), (p * p).mean()])
        per_tensor = torch.cat([per_tensor, 0.5 * torch.log(sq + NORM_EPS)])
    h = _layer(xs, w0, b0 + per_tensor @ wt)
    hidden = weights[3:-2]
    for w, bias in zip(hidden[0::2], hidden[1::2]):
        h = _layer(h, w, bias)
    w_out, b_out = weights[-2], weights[-1]
    direction = _dot(h, w_out, 0) + b_out[0]
    magnitude = _dot(h, w_out, 1) + b_out[1]
    new_p = p - direction * torch.exp(magnitude * exp_mult) * mult
    return tuple(x.reshape(shape) for x in (new_p, m1, m2, m3, v)) + (row, col)


def _inplace(step: Callable, g, p, state, t, mult, weights) -> None:
    keys = ("m1", "m2", "m3", "v", "row", "col")
    out = step(g, p, *(state[k] for k in keys), t, mult, weights)
    p.copy_(out[0])
    for k, x in zip(keys, out[1:]):
        state[k].copy_(x)


def theta_weights(lopt, theta: Theta, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """``theta`` in :func:`tensor_step`'s order, cast to the parameters' dtype."""
    keys = ["w0", "wt", "b0"]
    for i in range(1, lopt.layers):
        keys += [f"w{i}", f"b{i}"]
    return tuple(theta[k].to(dtype) for k in keys + ["w_out", "b_out"])


#: the one-off compile of one kernel family, for the message (issue 14 measured 227 s for a
#: model's whole first step on 2 CPU cores, when every new shape could recompile; one family
#: took over 7 min on a 2-core machine at load average 12-17); a later process loads the
#: compiled kernels from Inductor's on-disk cache
COMPILE_COST = "about 1-2 min per kernel family on a 2-core CPU, longer under load"


def kernel_family(p: Tensor) -> tuple:
    """What one compiled graph of the step covers: sizes are dynamic, but the tensor's rank
    and whether its ``[R, C]`` view has a side of 1 (specialised by the compiler) are not."""
    r, c = matrix_shape(p.shape)
    return p.device.type, p.dtype, p.dim(), r == 1, c == 1


def fused_rule_step(lopt, theta: Theta, compile: bool = True,
                    cpu_kernels: bool = True) -> Callable[..., None]:
    """The in-place multi-tensor step ``fused(params, grads, states, hp, steps)`` of
    ``lopt`` with ``theta`` bound (the rule's capability ``caps.fused``).

    With ``compile`` (the point of this path), a float32/float64 tensor on a CPU runs the C
    kernels of :mod:`learned.fused_mlp_cpu` (built in about a second, where a C compiler
    exists); any other tensor's step runs as Inductor-compiled kernels with
    dynamic sizes from the start, so a model compiles one graph per :func:`kernel_family`
    (typically two: matrices and vectors), not one per shape; the first step of each family
    prints what it is compiling and how long it took (on stderr). ``compile=False`` runs the
    same formulation eagerly (for tests); ``cpu_kernels=False`` keeps CPU tensors on Inductor
    too (benchmarks).
    """
    step = functools.partial(tensor_step, exp_mult=lopt.exp_mult,
                             scale_features=lopt.scale_features,
                             adam_feature=lopt.adam_feature, adam_scale=lopt.adam_scale,
                             taus=lopt.taus)
    compile = compile and not torch._dynamo.config.disable  # TORCH_COMPILE_DISABLE=1: eager
    if compile:
        step = torch.compile(step, fullgraph=True, dynamic=True, options=compile_options())
    cache: dict = {}
    compiled: set = set()

    def fused(params, grads, states, hp, steps) -> None:
        info = as_param_info(hp.get("info"))
        for p, g, s, st in zip(params, grads, states, steps):
            if lopt.orthogonalized(info, p):
                before = p.clone()  # the per-coordinate step, then its orthogonalization
                tensor(p, g, s, st, info)
                p.copy_(before - lopt.orthogonal_delta(before - p))
            else:
                tensor(p, g, s, st, info)

    def tensor(p, g, s, st, info) -> None:
        key = (p.device, p.dtype)
        if key not in cache:
            cache[key] = theta_weights(lopt, theta, p.dtype)
        weights = cache[key]
        if (compile and cpu_kernels and fused_mlp_cpu.supports(p, g)
                and fused_mlp_cpu.tensor_step(lopt, weights, g, p, s, int(st),
                                              lopt.step_mult * lopt.scale(info))):
            return
        t = torch.tensor(float(st), dtype=p.dtype, device=p.device)
        mult = torch.tensor(lopt.step_mult * lopt.scale(info), dtype=p.dtype, device=p.device)
        family = kernel_family(p) if compile else None
        if family is None or family in compiled:
            _inplace(step, g, p, s, t, mult, weights)
            return
        start = _announce(family)
        _inplace(step, g, p, s, t, mult, weights)
        compiled.add(family)
        print(f"learned.fused_mlp: compiled in {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)

    # where impl="auto" takes this path: CPUs with the C kernels (ms to load once built); on a
    # GPU the Inductor compile costs minutes, so "auto" keeps the loop there
    fused.devices = ("cpu",) if compile and cpu_kernels and fused_mlp_cpu.available() else ()
    return fused


def _announce(family: tuple) -> float:
    device, dtype, dim, _, _ = family
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "Inductor's default cache folder")
    print(f"learned.fused_mlp: compiling the fused MLPLOpt step for {dim}-d {dtype} tensors "
          f"on {device} ({COMPILE_COST}; later processes load it from the on-disk cache in "
          f"{cache})",
          file=sys.stderr, flush=True)
    return time.perf_counter()
