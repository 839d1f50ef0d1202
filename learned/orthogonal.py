"""Orthogonalized learned steps for hidden matrices (``MLPLOpt(orthogonalize=True)``).

Celo2 (Moudgil, Knyazev & Belilovsky, "Celo2: Towards Learned Optimization Free Lunch", ICLR
2026, arXiv 2602.19142) runs its learned per-coordinate update through an orthogonalization for
hidden weight matrices, as Muon does with momentum (Jordan et al. 2024, "Muon: An optimizer for
hidden layers in neural networks"). Here the LO's per-coordinate step ``D`` of a hidden matrix
(its ``[R, C]`` view) is replaced by

    delta = step * max(1, R / C)^{1/2} * NS5(D)

where ``NS5`` is Muon's quintic Newton-Schulz iteration (:func:`metaopt.zoo.muon.newton_schulz`,
run in float32: ``NS5(D)`` approximates ``U V^T`` of ``D = U S V^T``, so only ``D``'s singular
vectors survive, not its scale) and ``step`` is the LO's ``step_mult * ortho_gain``. Muon's
scale ``max(1, R/C)^{1/2}`` makes the step's spectral norm independent of the width for square
matrices, so like Muon's learning rate ``step`` transfers across widths without μLO's
``1 / fan_in`` (which is for per-coordinate steps of O(1) entries). The warm start
:func:`learned.adam_like_theta` makes ``D`` Adam's direction, so the orthogonalized LO starts as
Adam on vectors, input and output layers with ``NS5(Adam direction)`` on hidden matrices.
"""
from __future__ import annotations

import torch
from torch import Tensor

from metaopt.tasks import ParamInfo
from metaopt.zoo.muon import newton_schulz

from .features import matrix_shape

NS_STEPS = 5


def is_orthogonalized(info: ParamInfo | None, shape: torch.Size) -> bool:
    """Hidden weights whose ``[R, C]`` view is a matrix (both sides > 1) are orthogonalized;
    vectors, input and output layers and tensors without ``info`` keep the per-coordinate step."""
    r, c = matrix_shape(shape)
    return info is not None and info.role == "hidden" and min(r, c) > 1


def orthogonal_step(d: Tensor, step: float | Tensor) -> Tensor:
    """``step * max(1, R/C)^{1/2} * NS5(D)`` for a per-coordinate step ``d`` (module docstring),
    shaped like ``d``; computed in float32 at least."""
    r, c = matrix_shape(d.shape)
    dtype = torch.promote_types(d.dtype, torch.float32)
    o = newton_schulz(d.reshape(r, c), NS_STEPS, dtype=dtype).reshape(d.shape)
    return (o * (step * max(1.0, r / c) ** 0.5)).to(d.dtype)
