"""The one calling convention of user losses in :mod:`bilevel`, checked before any work.

    loss(params, hparams)           when the method is given no data batches (full batch)
    loss(params, hparams, batch)    when it is (``unrolled_hypergrad(batches=...)``,
                                    ``f2sa(sample_inner=..., sample_outer=...)``)

A function with a default ``batch=None`` serves both. A wrong arity is a one-line
``ValueError`` naming the loss and the expected signature, not a deep ``TypeError``.
"""
from __future__ import annotations

import inspect
from typing import Callable


def accepts(fn: Callable, n: int) -> bool | None:
    """Whether ``fn`` can be called with ``n`` positional arguments (None: not introspectable)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(*range(n))
    except TypeError:
        return False
    return True


def check_loss(fn: Callable, name: str, batched: bool) -> None:
    """Raise the one-line error when ``fn`` cannot take the arguments it will be called with."""
    if not callable(fn):
        raise ValueError(f"{name} must be a function; got {type(fn).__name__}")
    n = 3 if batched else 2
    if accepts(fn, n) is False:
        want = f"{name}(params, hparams, batch)" if batched else f"{name}(params, hparams)"
        why = "batches are given" if batched else "no batches are given"
        raise ValueError(f"{name} must be callable as {want} because {why} (a default batch=None "
                         "serves both); its signature is " + str(inspect.signature(fn)))
