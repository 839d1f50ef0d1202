"""Adam, AdamW and AMSGrad.

    m_t = b1 m_{t-1} + (1 - b1) g_t
    v_t = b2 v_{t-1} + (1 - b2) g_t^2
    p_t = p_{t-1} - lr * (m_t / (1 - b1^t)) / (sqrt(v_t) / sqrt(1 - b2^t) + eps)

Adam (Kingma & Ba, ICLR 2015) adds weight decay to the gradient (``g_t = grad + wd p``);
AdamW (Loshchilov & Hutter, ICLR 2019) decouples it: ``p <- p (1 - lr wd)`` before the step.
AMSGrad (Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018) divides by
the running maximum ``vmax_t = max(vmax_{t-1}, v_t)`` instead of ``v_t``, with Adam's coupled
weight decay (torch.optim.Adam(amsgrad=True)).
The eps placement and bias corrections follow torch.optim.Adam/AdamW, whose defaults these are
(lr 1e-3, betas (0.9, 0.999), eps 1e-8; weight decay 0 for Adam and AMSGrad, 1e-2 for AdamW).
``cautious=True`` on AdamW masks the direction with the cautious mask (see
:mod:`metaopt.zoo._cautious_mask`; Liang et al. 2024) before adding the decay.
The fused path is torch's own fused multi-tensor kernel (``torch._fused_adam(w)_``).
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from ._cautious_mask import cautious
from .checks import check_betas, check_min
from .registry import member_rule, register
from ._sqrt import sqrt0
from ._weight_decay import coupled_weight_decay


def _init(p):
    return {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}


def _init_ams(p):
    return dict(_init(p), max_exp_avg_sq=torch.zeros_like(p))


def adam_direction(g, state, hp, step):
    """Bias-corrected Adam direction ``m_hat / (sqrt(v_hat) + eps)`` and the new moments."""
    b1, b2 = hp["betas"]
    m = torch.lerp(state["exp_avg"], g, 1 - b1)
    v = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
    bc1 = 1 - b1**step
    bc2_sqrt = (1 - b2**step) ** 0.5
    d = (m / bc1) / (sqrt0(v) / bc2_sqrt + hp["eps"])
    return d, {"exp_avg": m, "exp_avg_sq": v}


def amsgrad_direction(g, state, hp, step):
    """``m_hat / (sqrt(vmax) / sqrt(1 - b2^t) + eps)`` with ``vmax`` the running max of ``v``."""
    b1, b2 = hp["betas"]
    m = torch.lerp(state["exp_avg"], g, 1 - b1)
    v = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
    vmax = torch.maximum(state["max_exp_avg_sq"], v)
    d = (m / (1 - b1**step)) / (sqrt0(vmax) / (1 - b2**step) ** 0.5 + hp["eps"])
    return d, {"exp_avg": m, "exp_avg_sq": v, "max_exp_avg_sq": vmax}


def _coupled(direction):
    def update(g, p, state, hp, step):
        d, new = direction(coupled_weight_decay(g, p, hp["weight_decay"]), state, hp, step)
        return hp["lr"] * d, new

    return update


_adam_update = _coupled(adam_direction)
_amsgrad_update = _coupled(amsgrad_direction)


def _adamw_update(g, p, state, hp, step):
    d, new = adam_direction(g, state, hp, step)
    if hp["cautious"]:
        d = cautious(d, g)
    return hp["lr"] * (d + hp["weight_decay"] * p), new


def _fused(kernel, update=None, amsgrad=False):
    def fused(params, grads, states, hp, steps):
        if hp.get("cautious"):  # torch's kernel has no mask: run the rule per tensor
            for p, g, s, t in zip(params, grads, states, steps):
                delta, new = update(g, p, s, hp, t)
                p.sub_(delta)
                for k, v in new.items():
                    s[k].copy_(v)
            return
        b1, b2 = hp["betas"]
        dev = params[0].device
        step_t = torch.full((), float(steps[0]), dtype=torch.float32, device=dev)
        step_ts = [step_t] * len(params) if len(set(steps)) == 1 else [
            torch.full((), float(s), dtype=torch.float32, device=dev) for s in steps]
        kernel(
            params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
            [s["max_exp_avg_sq"] for s in states] if amsgrad else [], step_ts,
            amsgrad=amsgrad, lr=float(hp["lr"]), beta1=float(b1), beta2=float(b2),
            weight_decay=float(hp["weight_decay"]), eps=float(hp["eps"]), maximize=False,
        )

    return fused


def _check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2)
    check_min(hp, "eps")
    check_min(hp, "weight_decay")


def _fused_ok(kernel_name: str, update=None, amsgrad=False):
    if not hasattr(torch, kernel_name):
        return None
    return _fused(getattr(torch, kernel_name), update, amsgrad)


@register("adam", sample={"weight_decay": 0.05})
def adam() -> UpdateRule:
    return member_rule(
        _init, _adam_update,
        hp={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
        check=_check, caps=Capabilities(fused=_fused_ok("_fused_adam_")),
    )


@register("adamw", sample={"weight_decay": 0.05})
def adamw() -> UpdateRule:
    return member_rule(
        _init, _adamw_update,
        hp={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2,
            "cautious": False},
        check=_check, caps=Capabilities(fused=_fused_ok("_fused_adamw_", _adamw_update)),
    )


@register("amsgrad", sample={"weight_decay": 0.05})
def amsgrad() -> UpdateRule:
    return member_rule(
        _init_ams, _amsgrad_update,
        hp={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
        check=_check, caps=Capabilities(fused=_fused_ok("_fused_adam_", amsgrad=True)),
    )
