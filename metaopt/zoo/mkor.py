"""MKOR: Kronecker-factored preconditioning with inverse factors kept by rank-1 updates.

Mozaffari, Li, Zhang, Mehri Dehnavi, "MKOR: Momentum-Enabled Kronecker-Factor-Based Optimizer
Using Rank-1 Updates" (NeurIPS 2023, arXiv 2306.01685); official package
github.com/Mohammad-Mozaffari/mkor (``mkor/mkor.py``, ``mkor/utils/factors.py``).

For a layer ``y = [W, b] a_bar`` with ``N`` input rows ``a_bar = [a, 1]`` and output
gradients ``g`` (:mod:`metaopt.zoo.layer_stats`), MKOR keeps inverse Kronecker factors
``J_A`` ([in+1, in+1]) and ``J_G`` ([out, out]). Every ``inv_freq``-th step (steps 1, f+1,
2f+1, ..., and every step of the first ``warmup_steps``) it folds in the rank-1 batch means

    u = mean_rows(clip(a_bar, c)),   v = mean_rows(clip(N g, c))      (c = clipping_value)
    J_A <- SM(gamma J_A + (1 - gamma) I, u),   J_G <- SM(gamma J_G + (1 - gamma) I, v)
    SM(P, u) = P - (P u)(u^T P) / (1 + u^T P u)  =  (P^{-1} + u u^T)^{-1}    (Sherman-Morrison)

(``N g`` is the per-row gradient of a loss averaged over the rows). Norm-based stabiliser:
after an update of either factor, ``max |J| > reset_threshold`` marks both factors of the layer
for a reset, and the next update of a marked factor sets it to ``I`` instead (the first update
of a layer is a reset). Every step the layer's joint gradient ``D = [dW, db]`` is
preconditioned and rescaled to the gradient's norm,

    V = J_G D J_A,   V <- V (|dW| + |db|) / (|V_W| + |V_b|)       (Frobenius norms; V = D if 0/0)

and the backend optimizer, SGD with momentum (torch.optim.SGD's form, :mod:`.sgd`), steps
with ``V`` in place of the gradient. A tensor without a captured layer takes the backend step
with its raw gradient, as in the official code.

Defaults: stat_decay 0.95, inv_freq 10, clipping_value 100, reset threshold 2, warmup_steps 0
(the package's); the backend's lr 1e-3 and momentum 0.9 are the defaults of the official
examples' MKOR optimizer (the package passes the backend's arguments through).

Departures, all deliberate, each where the official package differs from a plain reading:
  * The package mixes with a hard-coded 0.95 and ignores its ``stat_decay`` argument (whose
    default is 0.95); ``stat_decay`` is that constant here.
  * The package's reset would mix ``(1 - zeta) J + zeta I`` with ``stabilization_factor`` zeta,
    but its branch condition (a module looked up in a list of tensors) never holds, so a reset
    always sets ``J = I``; that is what this rule does, and zeta is not a hyperparameter.
  * Factors are in the parameter's precision (float32 for bf16/fp16 parameters); the package
    keeps them in fp16 by default (``half_precision=True``) and multiplies in float32.
  * For ``nn.Conv2d`` the package averages ``N g`` over output pixels per image (``1/L`` of
    this rule's ``v``, which sums them like a ``Linear`` layer's rows) and clips per-image
    means; the ``Linear`` statistics are the package's.
  * Only the SGD backend (the package also offers Adam, an optimizer instance, ``sgd_layers``,
    gradient accumulation and a loss-scale divisor).
Each tensor of a layer keeps its own copy of the layer's factors and computes the layer's
joint step (the package treats ``[W, b]`` as one block), so a layer's bias doubles its cost.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..capabilities import Capabilities
from ..helpers import compute_dtype
from ..rule import UpdateRule
from .checks import check_int, check_min, check_unit
from .registry import member_rule, register
from .sgd import check_sgd_hp, sgd

_BACKEND = sgd()
BACKEND_KEYS = ("lr", "momentum", "dampening", "weight_decay", "nesterov")


def sherman_morrison(inv: Tensor, u: Tensor) -> Tensor:
    """``(inv^{-1} + u u^T)^{-1}`` from ``inv`` by the Sherman-Morrison formula."""
    left, right = inv @ u, u @ inv
    return inv - torch.outer(left, right) / (1 + right @ u)


def identity_like(vec: Tensor) -> Tensor:
    """The identity matrix of ``vec``'s length, dtype and device."""
    return torch.eye(vec.numel(), dtype=vec.dtype, device=vec.device)


def next_inverse(inv: Tensor, u: Tensor, gamma) -> Tensor:
    """``SM(gamma J + (1 - gamma) I, u)``: the package's update of an inverse factor."""
    return sherman_morrison(gamma * inv + (1 - gamma) * identity_like(u), u)


def rank1_vectors(layer_in: Tensor, layer_grad_out: Tensor, clip, dtype: torch.dtype
                  ) -> tuple[Tensor, Tensor]:
    """``(u, v)``: the clipped batch means of ``a_bar`` and of ``N g``."""
    n = layer_grad_out.shape[0]
    u = layer_in.to(dtype).clamp(-clip, clip).mean(0)
    v = (n * layer_grad_out.to(dtype)).clamp(-clip, clip).mean(0)
    return u, v


def refreshed_factors(state: dict, u: Tensor, v: Tensor, hp) -> dict:
    """The layer's inverse factors and reset marks after this step's rank-1 update (the first
    update of a layer is a reset of both factors)."""
    marks = {"reset_a": bool(state.get("reset_a", True)),
             "reset_g": bool(state.get("reset_g", True))}
    out = {}
    for key, mark, vec in (("a_inv", "reset_a", u), ("g_inv", "reset_g", v)):
        if marks[mark]:
            out[key] = identity_like(vec)
            marks[mark] = False
        else:
            out[key] = next_inverse(state[key], vec, hp["stat_decay"])
            if out[key].abs().max() > hp["reset_threshold"]:  # marks both, also for G now
                marks = {"reset_a": True, "reset_g": True}
    return {**out, **{k: torch.tensor(m) for k, m in marks.items()}}


def own_part(x: Tensor, p: Tensor) -> Tensor:
    """``p``'s columns of a layer matrix ``[out, in (+1)]``: the last for a bias, the first
    ``in`` (reshaped like ``p``) for a weight."""
    if p.dim() == 1:
        return x[:, -1]
    return x[:, :p[0].numel()].reshape(p.shape)


def preconditioned_grad(p: Tensor, layer_grad: Tensor, state: dict) -> Tensor:
    """``p``'s part of ``J_G D J_A``, rescaled to the norm of ``D`` (the weight's norm plus
    the bias's); ``p``'s raw gradient when ``D`` is zero."""
    d = layer_grad.to(state["a_inv"].dtype)
    v = state["g_inv"] @ d @ state["a_inv"]
    k = d.shape[1] - 1 if p.dim() == 1 else p[0].numel()  # the weight's columns end at k
    scale = (d[:, :k].norm() + d[:, k:].norm()) / (v[:, :k].norm() + v[:, k:].norm())
    return torch.where(scale.isnan(), own_part(d, p), own_part(v, p) * scale)


def _init(p):
    return {"momentum_buffer": torch.zeros_like(p)}


def _update(g, p, state, hp, step, layer_in=None, layer_grad_out=None, layer_grad=None):
    state = dict(state)
    if layer_in is not None and layer_grad_out is not None:
        u, v = rank1_vectors(layer_in, layer_grad_out, hp["clipping_value"],
                             compute_dtype(p.dtype))
        state.update(refreshed_factors(state, u, v, hp))
    if layer_grad is not None and "a_inv" in state:
        g = preconditioned_grad(p, layer_grad, state).to(p.dtype)
    backend_hp = {**{k: hp[k] for k in BACKEND_KEYS}, "cautious": False}
    delta, backend = _BACKEND.update(g, p, {"momentum_buffer": state["momentum_buffer"]},
                                     backend_hp, step)
    return delta, {**state, **backend}


def _needs(hp, step):
    t = int(step) - 1
    if t % int(hp["inv_freq"]) == 0 or t < int(hp["warmup_steps"]):
        return frozenset({"layer", "layer_grad"})
    return frozenset({"layer_grad"})


def _check(hp):
    check_sgd_hp(hp)  # the backend's hyperparameters
    check_unit(hp, "stat_decay", closed=True)
    check_min(hp, "clipping_value", strict=True)
    check_min(hp, "reset_threshold", strict=True)
    check_int(hp, "inv_freq", 1)
    check_int(hp, "warmup_steps", 0)


@register("mkor", sample={"inv_freq": 3, "weight_decay": 0.01, "lr": 0.05, "reset_threshold": 0.9})
def mkor() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-3, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0,
            "nesterov": False, "stat_decay": 0.95, "inv_freq": 10, "clipping_value": 100.0,
            "reset_threshold": 2.0, "warmup_steps": 0},
        check=_check, caps=Capabilities(needs=_needs, elementwise=False),
    )
