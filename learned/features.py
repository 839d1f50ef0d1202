"""Per-coordinate input features of :class:`learned.MLPLOpt` (AdafacMLPLOpt / small_fc_lopt style).

Every tensor is viewed as a matrix ``[R, C]`` (a scalar as ``[1, 1]``, a vector as ``[1, n]``,
an ``[a, b, ...]`` tensor as ``[a, b*...]``). Its optimizer state, updated from the gradient
``g`` each step, is

    m_i   = b_i m_i + (1 - b_i) g          b_i in DECAYS = (0.9, 0.99, 0.999)
    v     = b_v v + (1 - b_v) g^2          b_v = 0.999
    row   = b_v row + (1 - b_v) mean_j g^2 (per row)      col: the same per column
    f     = row_r col_c / mean(row)        (Adafactor's factored second moment; for a vector,
                                            f = v up to the eps below)

and the features of coordinate ``(r, c)`` are (``a = rsqrt(v + eps)``, ``b = rsqrt(f + eps)``):

    g, p, m_1, m_2, m_3, sqrt(v + eps), m_1 a, m_2 a, m_3 a, a,
    b, g b, m_1 b, m_2 b, m_3 b, rsqrt(row_r + eps), rsqrt(col_c + eps)

each normalised over the tensor, ``x / sqrt(mean(x^2) + 1e-5)`` (learned_optimization's
``_second_moment_normalizer``). Per tensor (not per coordinate), the LO also sees
``tanh(t / tau - 1)`` for tau in ``TAUS`` (or the LO's own ``taus``) and, optionally, the log scales
``log sqrt(mean(g^2) + 1e-5)`` and ``log sqrt(mean(p^2) + 1e-5)`` (VeLO feeds parameter scales
too); these enter the MLP's first layer as a bias. The scales make the LO's output depend on the
gradient's size, which can express plain SGD but breaks the width-independence μP relies on, so
they are off by default.

Optionally (:func:`adam_direction`) the LO also sees Adam's bias-corrected direction
``m_1 / (1 - b_1^t) / (sqrt(v / (1 - b_v^t)) + eps)`` (Kingma & Ba 2015, with ``b_1 = 0.9``,
``b_v = 0.999`` as torch's Adam) *without* the per-tensor normalisation: normalising keeps every
tensor's step RMS fixed, which removes Adam's own annealing (its direction's RMS falls as the
gradient noise grows relative to the long memory of ``v``), so a normalised "Adam" needs a
several times smaller learning rate and trains much slower. The raw direction is O(1) per
coordinate at every width, as μP wants of an LO's input.

Features are produced in row chunks (:func:`feature_chunks`) so a ``[numel x features]`` matrix is
never built for a large tensor; the normaliser is accumulated in a first pass over the chunks.

Metz et al., "Practical tradeoffs between memory, compute, and performance in learned
optimizers" (CoLLAs 2022; ``adafac_mlp_lopt.py``); Shazeer & Stern, "Adafactor" (ICML 2018).
"""
from __future__ import annotations

from typing import Iterator, Mapping

import torch
from torch import Tensor

from metaopt.helpers import sqrt0

DECAYS = (0.9, 0.99, 0.999)
RMS_DECAY = 0.999
TAUS = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
EPS = 1e-8
NORM_EPS = 1e-5
ADAM_RMS_EPS = 1e-16
FEATURES = ("g", "p", "m1", "m2", "m3", "rms", "m1*a", "m2*a", "m3*a", "a",
            "b", "g*b", "m1*b", "m2*b", "m3*b", "row", "col")
SCALE_FEATURES = ("log_rms_g", "log_rms_p")
N_FEATURES = len(FEATURES)


def matrix_shape(shape: torch.Size) -> tuple[int, int]:
    """The ``[R, C]`` view of a tensor of ``shape`` (see the module docstring)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    rest = 1
    for d in shape[1:]:
        rest *= d
    return shape[0], rest


def init_state(param: Tensor) -> dict[str, Tensor]:
    """Zero moments: ``m1 m2 m3 v`` shaped like ``param``, ``row [R]``, ``col [C]``."""
    r, c = matrix_shape(param.shape)
    z = torch.zeros_like(param)
    return {"m1": z, "m2": z.clone(), "m3": z.clone(), "v": z.clone(),
            "row": param.new_zeros(r), "col": param.new_zeros(c)}


def update_state(g: Tensor, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The moments after gradient ``g`` (out of place)."""
    new = {f"m{i + 1}": torch.lerp(state[f"m{i + 1}"], g, 1 - b) for i, b in enumerate(DECAYS)}
    new["v"] = torch.lerp(state["v"], g * g, 1 - RMS_DECAY)
    new["row"], new["col"] = update_factored(g, state["row"], state["col"])
    return new


def update_factored(g: Tensor, row: Tensor, col: Tensor) -> tuple[Tensor, Tensor]:
    """Adafactor's row and column statistics after gradient ``g`` (out of place): ``row``
    and ``col`` moved towards the means of ``g^2`` over each row and column of its
    ``[R, C]`` view."""
    r, c = matrix_shape(g.shape)
    g2 = (g * g).reshape(r, c)
    return (torch.lerp(row, g2.mean(1), 1 - RMS_DECAY),
            torch.lerp(col, g2.mean(0), 1 - RMS_DECAY))


def raw_features(g: Tensor, p: Tensor, m1: Tensor, m2: Tensor, m3: Tensor, v: Tensor,
                 row: Tensor, col: Tensor, row_mean: Tensor) -> Tensor:
    """Unnormalised features ``[rows, C, N_FEATURES]`` of a row block (all inputs ``[rows, C]``
    except ``row [rows]``, ``col [C]`` and the scalar ``row_mean`` of the whole tensor)."""
    a = torch.rsqrt(v + EPS)
    f = row[:, None] * col[None, :] / (row_mean + EPS)
    b = torch.rsqrt(f + EPS)
    rr = torch.rsqrt(row + EPS)[:, None].expand_as(g)
    cc = torch.rsqrt(col + EPS)[None, :].expand_as(g)
    return torch.stack([g, p, m1, m2, m3, torch.sqrt(v + EPS), m1 * a, m2 * a, m3 * a, a,
                        b, g * b, m1 * b, m2 * b, m3 * b, rr, cc], dim=-1)


def feature_chunks(g: Tensor, p: Tensor, state: Mapping[str, Tensor],
                   chunk_elems: int) -> Iterator[Tensor]:
    """Unnormalised features of consecutive row blocks, each ``[rows * C, N_FEATURES]`` with at
    most ``max(chunk_elems, C)`` rows of coordinates; ``state`` is the *updated* state."""
    r, c = matrix_shape(g.shape)
    mats = [x.reshape(r, c) for x in (g, p, state["m1"], state["m2"], state["m3"], state["v"])]
    row_mean = state["row"].mean()
    rows = max(1, chunk_elems // c)
    for start in range(0, r, rows):
        sl = slice(start, start + rows)
        block = raw_features(*(x[sl] for x in mats), state["row"][sl], state["col"], row_mean)
        yield block.reshape(-1, N_FEATURES)


def feature_normalizer(g: Tensor, p: Tensor, state: Mapping[str, Tensor],
                       chunk_elems: int) -> Tensor:
    """``rsqrt(mean(x^2) + 1e-5)`` of each feature over the tensor (first pass over chunks)."""
    total = sum((blk * blk).sum(0) for blk in feature_chunks(g, p, state, chunk_elems))
    return torch.rsqrt(total / g.numel() + NORM_EPS)


def normalized_features(g: Tensor, p: Tensor, state: Mapping[str, Tensor]) -> Tensor:
    """All normalised features ``[numel, N_FEATURES]`` at once (small tensors and tests only)."""
    norm = feature_normalizer(g, p, state, g.numel())
    return torch.cat(list(feature_chunks(g, p, state, g.numel()))) * norm


def as_time(step: int | Tensor, like: Tensor) -> Tensor:
    """The step count as a 0-d tensor of ``like``'s dtype and device."""
    if isinstance(step, Tensor):
        return step.to(like.dtype)
    return torch.tensor(float(step), dtype=like.dtype, device=like.device)


def adam_direction(state: Mapping[str, Tensor], step: int | Tensor) -> Tensor:
    """Adam's bias-corrected direction from the *updated* state, exactly as ``zoo.rule("adam")``
    (torch.optim.Adam): ``(m_1 / (1 - 0.9^t)) / (sqrt(v) / sqrt(1 - 0.999^t) + EPS)``."""
    t = as_time(step, state["m1"])
    bc1, bc2 = 1 - DECAYS[0] ** t, 1 - RMS_DECAY ** t
    return (state["m1"] / bc1) / (sqrt0(state["v"]) / torch.sqrt(bc2) + EPS)


def adam_rms(u: Tensor) -> Tensor:
    """``sqrt(mean(u^2) + 1e-16)`` over the tensor: the Adam feature's normaliser and the step
    scale of :class:`learned.MLPLOpt` with ``adam_scale``."""
    return torch.sqrt((u * u).mean() + ADAM_RMS_EPS)


def tensor_features(g: Tensor, p: Tensor, step: int | Tensor, scales: bool = False,
                    taus: tuple[float, ...] = TAUS) -> Tensor:
    """The per-tensor inputs: ``tanh(t / tau - 1)`` for tau in ``taus``, then
    ``SCALE_FEATURES`` when ``scales``."""
    t = as_time(step, g)
    taus = torch.tensor(taus, dtype=g.dtype, device=g.device)
    time = torch.tanh(t / taus - 1)
    if not scales:
        return time
    sq = torch.stack([(g * g).mean(), (p * p).mean()])
    return torch.cat([time, 0.5 * torch.log(sq + NORM_EPS)])
