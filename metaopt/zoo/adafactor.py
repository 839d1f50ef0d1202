"""Adafactor (Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
Cost", ICML 2018), in torch.optim.Adafactor's form (no first moment, relative step size):

    b2_t   = 1 - t^beta2_decay                        (decay_rate)
    rho_t  = min(lr, 1 / sqrt(t))
    a_t    = max(eps2, RMS(p_{t-1})) rho_t
    matrices (factored over the last two dimensions):
        R_t = b2_t R_{t-1} + (1 - b2_t) mean_cols(g^2)
        C_t = b2_t C_{t-1} + (1 - b2_t) mean_rows(g^2)
        V_t = R_t C_t / mean(R_t)
    vectors:  V_t = b2_t V_{t-1} + (1 - b2_t) g^2
    U_t    = g_t / sqrt(max(V_t, eps1^2))
    p_t    = p_{t-1} (1 - lr wd) - a_t U_t / max(1, RMS(U_t) / d)

Defaults (torch.optim.Adafactor): lr 1e-2, beta2_decay -0.8, eps (None, 1e-3) with
eps1 = None meaning the dtype's machine epsilon, d 1.0, weight_decay 0. The row/column
statistics make it per tensor, not elementwise. (The Hugging Face/fairseq port differs: it
has optional beta1, ``scale_parameter``, ``relative_step`` and ``warmup_init`` and clips with
``clip_threshold``; torch's version is the one used here.)
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from ._scalar import minimum
from .checks import check_min, fail
from .registry import member_rule, register


def _init(p):
    if p.dim() <= 1:
        return {"variance": torch.zeros_like(p)}
    row = list(p.shape)
    row[-1] = 1
    col = list(p.shape)
    col[-2] = 1
    return {"row_var": p.new_zeros(row), "col_var": p.new_zeros(col)}


def _rms(x):
    return x.norm() / x.numel() ** 0.5


def _update(g, p, state, hp, step):
    eps1, eps2 = hp["eps"]
    if eps1 is None:
        eps1 = torch.finfo(p.dtype).eps
    lr = hp["lr"]
    w = step ** hp["beta2_decay"]  # 1 - b2_t
    alpha = _rms(p).clamp(min=eps2) * minimum(lr, 1 / step**0.5)
    if p.dim() <= 1:
        var = torch.lerp(state["variance"], g * g, w)
        new, est = {"variance": var}, var
    else:
        row = torch.lerp(state["row_var"], (g * g).mean(dim=-1, keepdim=True), w)
        col = torch.lerp(state["col_var"], (g * g).mean(dim=-2, keepdim=True), w)
        new = {"row_var": row, "col_var": col}
        est = row @ col / row.mean(dim=-2, keepdim=True).clamp(min=eps1)
    u = g * est.clamp(min=eps1 * eps1).rsqrt()
    scale = alpha / (_rms(u) / hp["d"]).clamp(min=1.0)
    return scale * u + lr * hp["weight_decay"] * p, new


def _check(hp):
    check_min(hp, "lr")
    eps = hp["eps"]
    if not isinstance(eps, (tuple, list)) or len(eps) != 2:
        fail(f"invalid eps={eps!r}: must be a tuple (eps1 or None, eps2)")
    if eps[0] is not None:
        check_min({"eps[0]": eps[0]}, "eps[0]")
    check_min({"eps[1]": eps[1]}, "eps[1]")
    check_min(hp, "d", 0.0, strict=True)
    check_min(hp, "weight_decay")
    b = hp["beta2_decay"]
    if not isinstance(b, torch.Tensor) and b > 0:
        fail(f"invalid beta2_decay={b}: must be <= 0")


@register("adafactor", sample={"weight_decay": 0.05})
def adafactor() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-2, "beta2_decay": -0.8, "eps": (None, 1e-3), "d": 1.0, "weight_decay": 0.0},
        check=_check, caps=Capabilities(elementwise=False),
    )
