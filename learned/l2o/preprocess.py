"""Input preprocessing of the model-free L2O networks."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def log_and_sign(g: Tensor, k: float = 5.0) -> Tensor:
    """LogAndSign (Andrychowicz et al. 2016, Appendix A): two features per coordinate,

        (log|g| / k, sign g)   if |g| >= e^{-k}
        (-1, e^k g)            otherwise,

    written as ``(clamp(log(|g| + eps) / k, min=-1), clamp(e^k g, -1, 1))`` with ``eps`` the
    dtype's machine epsilon (the form of DeepMind's learning-to-learn code). Output ``(*g.shape, 2)``.
    """
    eps = torch.finfo(g.dtype).eps
    log = torch.clamp(torch.log(g.abs() + eps) / k, min=-1.0)
    sign = torch.clamp(g * math.exp(k), -1.0, 1.0)
    return torch.stack([log, sign], dim=-1)
