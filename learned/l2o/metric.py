"""The L2O metric of Math-L2O (Liu et al. 2023, §5): relative error to the optimal value."""
from __future__ import annotations

from torch import Tensor


def relative_error(objectives: Tensor, fstar: Tensor) -> Tensor:
    """``mean_i (F_i(x_k) - F*_i) / F*_i`` for each iteration ``k``.

    ``objectives`` is ``(iterations, instances)`` (or ``(instances,)``), ``fstar`` is
    ``(instances,)`` and must be positive (true for LASSO and logistic losses away from a
    perfect fit). Returns ``(iterations,)`` (or a scalar)."""
    fstar = fstar.to(objectives.dtype)
    if (fstar <= 0).any():
        raise ValueError("relative_error: F* must be positive for every instance")
    return ((objectives - fstar) / fstar).mean(-1)
