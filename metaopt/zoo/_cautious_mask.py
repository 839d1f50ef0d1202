"""The cautious mask (Liang, Chen, Liu & Liu, "Cautious Optimizers: Improving Training with
One Line of Code", arXiv 2411.16085, 2024; code: kyleliang919/C-Optim):

    phi = 1[u * g > 0]
    u'  = u * phi / max(mean(phi), 1e-3)

Coordinates where the update ``u`` disagrees in sign with the current gradient ``g`` are
zeroed and the rest rescaled so that the mean magnitude is kept. The mean runs over the
whole tensor, so a rule using it is not elementwise across tensors.
"""
from __future__ import annotations

from torch import Tensor

MIN_MEAN = 1e-3


def cautious(u: Tensor, g: Tensor) -> Tensor:
    """``u`` with coordinates that disagree with ``g`` masked out and the rest rescaled."""
    mask = (u * g > 0).to(u.dtype)
    return u * mask / mask.mean().clamp(min=MIN_MEAN)
