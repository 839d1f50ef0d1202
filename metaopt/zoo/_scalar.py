"""Arithmetic on values that are Python numbers or 0-d tensors.

Hyperparameters and the step count reach a rule as floats/ints (the optimizer path) or as 0-d
tensors (vmapped, compiled or differentiated); these helpers branch in Python on numbers and
with ``torch.where`` on tensors, so one rule body serves both without data-dependent Python
control flow on tensors.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def is_tensor(*vals: Any) -> bool:
    """Whether any of ``vals`` is a tensor."""
    return any(isinstance(v, Tensor) for v in vals)


def nonzero(v: Any) -> bool:
    """``v != 0`` for numbers; always True for tensors (their value is not inspected)."""
    return isinstance(v, Tensor) or v != 0


def select(cond: Any, a: Any, b: Any) -> Any:
    """``a if cond else b``; ``torch.where`` when ``cond`` is a tensor."""
    if isinstance(cond, Tensor):
        # the values' device wins (a CPU step count may select between CUDA tensors)
        dev = next((v.device for v in (a, b) if isinstance(v, Tensor)), cond.device)
        dt = _dtype(a, b)
        return torch.where(cond.to(dev), torch.as_tensor(a, dtype=dt, device=dev),
                           torch.as_tensor(b, dtype=dt, device=dev))
    return a if cond else b


def _dtype(a: Any, b: Any) -> torch.dtype:
    """The floating dtype of a tensor among ``a, b``; float64 for plain numbers (a 0-d
    result does not promote the dtype of the tensors it later multiplies)."""
    for v in (a, b):
        if isinstance(v, Tensor) and v.is_floating_point():
            return v.dtype
    return torch.float64


def minimum(a: Any, b: Any) -> Any:
    """Elementwise minimum of numbers or tensors."""
    if is_tensor(a, b):
        return torch.minimum(*_tensors(a, b))
    return min(a, b)


def _tensors(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    dev = next(v.device for v in (a, b) if isinstance(v, Tensor))
    dt = _dtype(a, b)
    return torch.as_tensor(a, dtype=dt, device=dev), torch.as_tensor(b, dtype=dt, device=dev)
