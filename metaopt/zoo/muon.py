"""Muon: momentum orthogonalized by a Newton-Schulz iteration.

Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024,
kellerjordan.github.io/posts/muon; code github.com/KellerJordan/Muon ``muon.py``), for a
matrix parameter ``W`` (a 4-D convolution kernel is flattened to ``(out, in*kh*kw)``):

    B_t = mu B_{t-1} + (1 - mu) G_t
    U_t = (1 - mu) G_t + mu B_t   (nesterov)   or   B_t
    O_t = NS5(U_t)    X <- X / ||X||_F;  5 x  X <- a X + (b A + c A^2) X,  A = X X^T
                      (a, b, c) = (3.4445, -4.7750, 2.0315), in bfloat16, on the wide side
    W_t = W_{t-1} (1 - lr wd) - lr max(1, rows / cols)^{1/2} O_t

``O_t`` approximates ``U V^T`` of ``U_t = U S V^T``. As in the official code and
``torch.optim.Muon``, the iteration runs in bfloat16 whatever the parameter dtype. Vectors and
scalars are not matrices: give them to another optimizer (the official code uses AdamW).
Defaults (official code): lr 0.02, momentum 0.95, nesterov True, weight_decay 0, 5 steps.
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from .checks import check_min, check_unit, fail
from .registry import member_id, member_rule, register

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(u: torch.Tensor, steps: int, eps: float = 1e-7,
                  dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The quintic Newton-Schulz orthogonalization of a matrix, in ``dtype`` (bfloat16 as the
    official code and torch.optim.Muon; a CPU without bfloat16 matrix units runs float32 about
    13x faster)."""
    a, b, c = NS_COEFFICIENTS
    x = u.to(dtype)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):  # addmm: one bfloat16 rounding per line, as torch.optim.Muon
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return (x.T if tall else x).to(u.dtype)


def _init(p):
    return {"momentum_buffer": torch.zeros_like(p)}


def _update(g, p, state, hp, step):
    if p.dim() < 2:
        raise ValueError(f"{member_id(muon)}: a parameter of shape {tuple(p.shape)} is not a "
                         "matrix; optimize vectors and scalars with another optimizer (e.g. adamw)")
    mu, lr = hp["momentum"], hp["lr"]
    buf = torch.lerp(state["momentum_buffer"], g, 1 - mu)
    u = torch.lerp(g, buf, mu) if hp["nesterov"] else buf
    mat = u.reshape(u.shape[0], -1)
    o = newton_schulz(mat, int(hp["ns_steps"])).reshape(p.shape)
    scale = max(1.0, mat.shape[0] / mat.shape[1]) ** 0.5
    return lr * hp["weight_decay"] * p + lr * scale * o, {"momentum_buffer": buf}


def _check(hp):
    check_min(hp, "lr")
    check_unit(hp, "momentum")
    check_min(hp, "weight_decay")
    n = hp["ns_steps"]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < 100:
        fail(f"invalid ns_steps={n!r}: must be an integer in [1, 100)")


@register("muon",
          sample={},
          opt_out={"differentiable": "Newton-Schulz runs in bfloat16 (as torch.optim.Muon): "
                       "float64 finite differences are below its resolution"},
          matrices_only=True)
def muon() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 0.02, "momentum": 0.95, "nesterov": True, "weight_decay": 0.0,
            "ns_steps": 5},
        check=_check, caps=Capabilities(elementwise=False),
    )
