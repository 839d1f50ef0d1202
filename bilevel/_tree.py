"""Pytree helpers shared by the hypergradient code: flatten a structure of tensors into one
vector and back, and validate user-supplied structures (one-line ``ValueError`` on bad input)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten


def leaves_of(tree: Any, what: str) -> tuple[list[Tensor], Any]:
    """The tensor leaves of ``tree`` and its spec; non-tensor or non-float leaves are an error."""
    leaves, spec = tree_flatten(tree)
    if not leaves:
        raise ValueError(f"{what} is empty; pass a tensor or a tuple/list/dict of tensors")
    for i, leaf in enumerate(leaves):
        if not isinstance(leaf, Tensor):
            raise ValueError(f"{what}: leaf {i} is {type(leaf).__name__}; every leaf must be a tensor")
        if not leaf.is_floating_point():
            raise ValueError(f"{what}: leaf {i} has dtype {leaf.dtype}; a floating dtype is required")
        if leaf.is_inference():
            raise RuntimeError(
                f"{what}: leaf {i} is an inference tensor (made under torch.inference_mode); "
                "derivatives through it would be silently zero - create it outside inference_mode")
    return leaves, spec


def unflatten(leaves: list[Tensor], spec: Any) -> Any:
    """Inverse of :func:`leaves_of`."""
    return tree_unflatten(list(leaves), spec)


def flat(leaves: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """Concatenate tensors into one vector (works on vmapped tensors: logical shapes only)."""
    return torch.cat([t.reshape(-1) for t in leaves])


def split_like(vector: Tensor, like: list[Tensor]) -> list[Tensor]:
    """Cut ``vector`` into tensors shaped like ``like`` (inverse of :func:`flat`)."""
    out, start = [], 0
    for t in like:
        n = t.numel()
        out.append(vector[start:start + n].reshape(t.shape))
        start += n
    return out
