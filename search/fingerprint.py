"""Numeric fingerprint: a hash of a program's outputs on fixed random inputs.

Two programs that compute the same function (``interp(g, m, 0.9)`` and ``0.1 * g + 0.9 * m``)
have different structural hashes but the same outputs. Following AutoML-Zero's functional
equivalence checking (Real et al., ICML 2020, Sec. 4.2), the pruned program runs for a few
steps in float64 on fixed inputs and the rounded updates are hashed; the search caches fitness
by this fingerprint, so no function is trained twice.
"""
from __future__ import annotations

import hashlib

import torch

from .interpret import step
from .program import Program

_DIM, _STEPS, _DIGITS = 16, 4, 6


def _inputs():
    gen = torch.Generator().manual_seed(1234)
    w = torch.randn(_DIM, generator=gen, dtype=torch.float64)
    gs = [torch.randn(_DIM, generator=gen, dtype=torch.float64) for _ in range(_STEPS)]
    return w, gs


_W0, _GS = _inputs()


def fingerprint(prog: Program, lrs=(0.01, 0.3)) -> str:
    """md5 of the updates (rounded to 6 significant digits) over 4 steps for two learning rates."""
    parts = []
    with torch.no_grad():
        for lr in lrs:
            w, state = _W0.clone(), {s: torch.zeros(_DIM, dtype=torch.float64) for s in prog.states}
            for k, g in enumerate(_GS):
                upd, state = step(prog, w, g + 0.1 * w, state, lr, float(k + 1))
                w = w - upd
                parts.append(",".join(f"{v:.{_DIGITS}g}" for v in upd.tolist()))
    return hashlib.md5("|".join(parts).encode()).hexdigest()
