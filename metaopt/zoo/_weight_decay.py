"""Weight decay, coupled or decoupled, shared by the rules that offer both."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from ._scalar import nonzero


def coupled_weight_decay(g: Tensor, p: Tensor, wd: Any) -> Tensor:
    """``g + wd p``: weight decay as an L2 term in the gradient (``wd == 0`` adds nothing)."""
    return g + wd * p if nonzero(wd) else g


def split_weight_decay(g: Tensor, p: Tensor, lr: Any, wd: Any, decoupled: bool
                       ) -> tuple[Tensor, Any]:
    """``(gradient, decay)`` for weight decay ``wd``.

    Coupled (L2): the gradient becomes ``g + wd p`` and the decay term is 0. Decoupled
    (Loshchilov & Hutter, ICLR 2019): the gradient is unchanged and the caller adds
    ``lr wd p`` to its step. ``wd == 0`` (a number) leaves both untouched.
    """
    if decoupled and nonzero(wd):
        return g, lr * wd * p
    return coupled_weight_decay(g, p, wd), 0.0
