"""Sophia: a clipped, diagonally preconditioned second-order method.

Liu, Li, Hall, Liang, Ma, "Sophia: A Scalable Stochastic Second-order Optimizer for Language
Model Pre-training" (ICLR 2024, arXiv 2305.14342), Algorithm 3:

    p_t = p_{t-1} (1 - lr wd)                                     (decoupled weight decay)
    m_t = b1 m_{t-1} + (1 - b1) g_t
    h_t = b2 h_{t-k} + (1 - b2) h_hat_t        only when (t - 1) mod k == 0, else h_{t-1}
    p_t = p_t - lr clip(m_t / max(rho h_t, eps), 1)             (clip(z, 1) = max(min(z, 1), -1))

with the Hessian-diagonal estimate ``h_hat`` every ``k = update_period`` steps:
  * ``estimator="hutchinson"`` (Sophia-H): ``h_hat = u * (H u)``, ``u`` Rademacher, through
    :class:`~metaopt.optimizer.RuleOptimizer`'s ``"hvp"`` extra (``backward(create_graph=True)``);
  * ``estimator="gnb"`` (Sophia-G): the Gauss-Newton-Bartlett estimate ``B * g_hat**2`` from
    labels sampled from the model's own logits (``opt.step(closure, logits=logits)``).

The clip is ``clip(m / max(rho h, eps))``, the paper's; the official code
(github.com/Liuhong99/Sophia, ``sophia.py``) writes ``sign(m) min(|m| / (rho bs h + 1e-15), 1)``
with ``h = g_hat**2`` and ``bs`` the tokens per batch, the same update for ``h >= 0``; the
paper's ``max`` also keeps a negative Hutchinson estimate from reversing the step.
Hessian refreshes fall on steps 1, k+1, 2k+1, ... (``pytorch_optimizer.SophiaH``'s schedule).
Defaults are the official code's: lr 1e-4, betas (0.965, 0.99), rho 0.04, weight_decay 0.1,
eps 1e-15, Hessian every 10 steps.
"""
from __future__ import annotations

import torch

from ..capabilities import Capabilities
from ..rule import UpdateRule
from .checks import check_betas, check_int, check_min, fail
from .registry import member_rule, register

ESTIMATORS = {"hutchinson": "hvp", "gnb": "gnb"}


def _init(p):
    return {"exp_avg": torch.zeros_like(p), "hessian": torch.zeros_like(p)}


def _hessian_estimate(ext: dict):
    if "hvp" in ext:
        return ext["u"] * ext["hvp"]
    return ext.get("gnb")


def _update(g, p, state, hp, step, **ext):
    b1, b2 = hp["betas"]
    lr = hp["lr"]
    m = torch.lerp(state["exp_avg"], g, 1 - b1)
    h = state["hessian"]
    h_hat = _hessian_estimate(ext)
    if h_hat is not None:
        h = torch.lerp(h, h_hat.to(h.dtype), 1 - b2)
    ratio = (m / torch.clamp(hp["rho"] * h, min=hp["eps"])).clamp(-1.0, 1.0)
    return lr * hp["weight_decay"] * p + lr * ratio, {"exp_avg": m, "hessian": h}


def _needs(hp, step):
    if (int(step) - 1) % int(hp["update_period"]) == 0:
        return frozenset({ESTIMATORS[hp["estimator"]]})
    return frozenset()


def _check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2)
    check_min(hp, "rho", strict=True)
    check_min(hp, "eps", strict=True)
    check_min(hp, "weight_decay")
    check_int(hp, "update_period", 1)
    if hp["estimator"] not in ESTIMATORS:
        fail(f"invalid estimator={hp['estimator']!r}: must be one of {sorted(ESTIMATORS)}")


@register("sophia",
          sample={"weight_decay": 0.05},
          opt_out={"complex": "its Hutchinson estimate draws real Rademacher probes; complex probes "
                       "are not defined here"})
def sophia() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-4, "betas": (0.965, 0.99), "rho": 0.04, "weight_decay": 0.1,
            "eps": 1e-15, "update_period": 10, "estimator": "hutchinson"},
        check=_check, caps=Capabilities(needs=_needs, elementwise=True),
    )
