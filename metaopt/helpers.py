"""Low-level helpers shared by every part of metaopt (and by search, learned, bilevel):
atomic file writes and safe file stems, flattening nested containers of tensors, the dtype low-precision tensors
are computed in, a square root differentiable at zero, and the Gram matrix of a tensor's
mode unfolding. Nothing here imports another metaopt module."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["check_file_stem", "compute_dtype", "flatten_tree", "mode_gram", "sqrt0",
           "unflatten_tree", "write_atomic"]


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and
    ``os.replace``: a reader (or a crash) never sees a half-written file."""
    path = Path(path)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_file_stem(name: str, what: str = "name") -> None:
    """A one-line ``ValueError`` unless ``name`` is a safe file stem (ASCII letters, digits,
    ``_`` and ``-``: no path separators, no dots); ``what`` names it in the message."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"{what} {name!r}: use letters, digits, '_' and '-' only (a file stem)")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype arithmetic on tensors of ``dtype`` runs in: float32 for lower-precision
    floats (bf16, fp16: their eps, squares and decompositions under/overflow), the dtype
    itself for float32 and float64."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def sqrt0(x: Tensor) -> Tensor:
    """``sqrt(x)`` for ``x >= 0``, with derivative 0 (not inf) at ``x == 0``.

    The forward value is identical to ``x.sqrt()``. Second-moment estimates are exactly zero
    wherever a gradient coordinate has always been zero (a constant input pixel, a dead ReLU);
    there ``d sqrt(v)/dv = inf`` meets ``dv/dg = 0`` and differentiating through the step
    (unrolled hypergradients, TBPTT meta-training) gives ``0 * inf = NaN``. The double ``where``
    keeps the unused branch's gradient finite as well.
    """
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, 1).sqrt(), 0)


def mode_gram(g: Tensor, i: int) -> Tensor:
    """``G_(i) G_(i)^T``: the Gram matrix of the mode-``i`` unfolding of ``g``."""
    u = g.movedim(i, 0).reshape(g.shape[i], -1)
    return u @ u.T


def flatten_tree(tree: Any) -> tuple[list[Any], Any]:
    """The leaves of nested dicts / lists / tuples (dicts in sorted key order) and a spec
    that :func:`unflatten_tree` rebuilds the structure from."""
    if isinstance(tree, dict):
        keys = sorted(tree)
        parts = [flatten_tree(tree[k]) for k in keys]
        return [x for leaves, _ in parts for x in leaves], ("dict", keys, [s for _, s in parts])
    if isinstance(tree, (list, tuple)):
        parts = [flatten_tree(v) for v in tree]
        kind = "list" if isinstance(tree, list) else "tuple"
        return [x for leaves, _ in parts for x in leaves], (kind, len(tree), [s for _, s in parts])
    return [tree], None


def unflatten_tree(leaves: list[Any], spec: Any) -> Any:
    """Inverse of :func:`flatten_tree`."""
    it = iter(leaves)
    return _build(it, spec)


def _build(it, spec):
    if spec is None:
        return next(it)
    kind, keys, subs = spec
    values = [_build(it, s) for s in subs]
    if kind == "dict":
        return dict(zip(keys, values))
    return values if kind == "list" else tuple(values)
