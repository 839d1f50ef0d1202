"""Proximal operator of the L1 norm."""
from __future__ import annotations

import torch
from torch import Tensor


def soft_threshold(v: Tensor, threshold) -> Tensor:
    """``prox_{t ||.||_1}(v) = sign(v) max(|v| - t, 0)`` coordinatewise (``t`` broadcasts)."""
    return torch.sign(v) * torch.relu(v.abs() - threshold)
