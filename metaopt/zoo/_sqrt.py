"""A square root that stays differentiable where its argument is exactly zero."""
from __future__ import annotations

import torch
from torch import Tensor


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
