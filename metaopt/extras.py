"""Extra inputs a rule asks for, computed by :class:`metaopt.optimizer.RuleOptimizer` before any
parameter moves: one provider per capability named in a rule's ``needs``.

    "loss"          the closure's loss                            (step(closure))
    "hvp"           Hutchinson probes u and H u                   (backward(create_graph=True))
    "gnb"           Sophia-G's Gauss-Newton-Bartlett estimate     (step(closure, logits=...))
    "layer"         layer_in, layer_grad_out of the tensor's layer (step(layer_stats=...))
    "layer_grad"    layer_grad, the layer's joint [dW, db]        (step(layer_stats=...))

A provider is ``provider(jobs, which, inputs, name) -> None``: ``jobs`` are the step's groups
as ``(params, needs)``, ``which`` the indices of those that asked for it, ``inputs`` the step's
keyword inputs (``loss``, ``logits``, ``layer_stats``, ...); it writes lists aligned with each
group's params into ``exts[i]``. A new capability is one provider in :data:`PROVIDERS`, with
no new :class:`~metaopt.rule.UpdateRule` field and no new ``step()`` argument.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

Job = tuple[list[Tensor], set]


def _layer(exts, jobs, which, inputs, name) -> None:
    """``layer_in`` / ``layer_grad_out`` / ``layer_grad`` from ``layer_stats.extras`` (``None``
    for a tensor that no captured layer owns; see :mod:`metaopt.zoo.layer_stats`)."""
    stats = inputs.get("layer_stats")
    if stats is None:
        raise RuntimeError(
            f"{name} needs per-layer statistics: create stats = metaopt.zoo.LayerStatistics("
            "model) before the forward pass and call step(layer_stats=stats)"
        )
    for i in which:
        exts[i].update(stats.extras(*jobs[i]))


def _loss(exts, jobs, which, inputs, name) -> None:
    """The closure's loss (negated for ``maximize``)."""
    loss = inputs.get("loss")
    if loss is None:
        raise RuntimeError(f"{name} needs the loss this step: call step(closure)")
    for i in which:
        exts[i]["loss"] = [loss.detach()] * len(jobs[i][0])


def _hvp(exts, jobs, which, inputs, name) -> None:
    """Hessian-vector products ``H u`` with Rademacher probes ``u`` (Hutchinson), one
    ``autograd.grad`` over every group's gradients (built with ``backward(create_graph=True)``),
    probes drawn group by group, tensor by tensor. A gradient that does not depend on the
    parameters (a bias under ``.sum()``) has a zero Hessian row block: its product is 0."""
    params = [p for i in which for p in jobs[i][0]]
    grads = inputs["grads"]
    us = [torch.randint_like(p, 0, 2) * 2 - 1 for p in params]
    graphed = [k for k, p in enumerate(params) if grads[p].grad_fn is not None]
    if not graphed:
        raise RuntimeError(
            f"{name} needs Hessian-vector products: compute gradients with "
            "loss.backward(create_graph=True)"
        )
    with torch.enable_grad():
        got = torch.autograd.grad([grads[params[k]] for k in graphed], params,
                                  [us[k] for k in graphed], allow_unused=True)
    hvps = [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(params, got)]
    _scatter(exts, jobs, which, {"hvp": hvps, "u": us})


def _gnb(exts, jobs, which, inputs, name) -> None:
    """Sophia-G's Gauss-Newton-Bartlett estimate ``B * g_hat**2`` with
    ``g_hat = grad (1/B) sum_b CE(logits_b, y_b)``, ``y_b ~ softmax(logits_b)``, over the ``B``
    rows of ``logits`` (Liu et al. 2023, Algorithm 2); 0 for a tensor the logits do not use."""
    logits = inputs.get("logits")
    if logits is None or logits.grad_fn is None:
        raise RuntimeError(
            f"{name} needs the model's logits this step: call step(closure, logits=logits) "
            "with logits that still have their graph (backward(retain_graph=True))"
        )
    params = [p for i in which for p in jobs[i][0]]
    with torch.enable_grad():
        flat = logits.reshape(-1, logits.shape[-1])
        labels = torch.distributions.Categorical(logits=flat.detach()).sample()
        sampled = torch.nn.functional.cross_entropy(flat, labels)
        ghat = torch.autograd.grad(sampled, params, allow_unused=True)
    b = flat.shape[0]
    est = [torch.zeros_like(p) if g is None else b * g * g for p, g in zip(params, ghat)]
    _scatter(exts, jobs, which, {"gnb": est})


#: capability -> provider; providers run in this order (layer statistics first, as before)
PROVIDERS: dict[str, Callable] = {"layer": _layer, "loss": _loss, "hvp": _hvp, "gnb": _gnb}
#: capabilities served by another's provider
ALIASES = {"layer_grad": "layer"}


def extras(jobs: list[Job], inputs: dict[str, Any], name: str) -> list[dict]:
    """Every extra input each group's rule asked for, as lists aligned with the group's
    params (one dict per job)."""
    exts: list[dict] = [{} for _ in jobs]
    unknown = set().union(*(n for _, n in jobs)) - set(PROVIDERS) - set(ALIASES) if jobs else set()
    if unknown:
        raise RuntimeError(f"{name} asks for unknown extra input(s) {sorted(unknown)}; "
                           f"known: {sorted(set(PROVIDERS) | set(ALIASES))}")
    for cap, provider in PROVIDERS.items():
        caps = {cap} | {a for a, c in ALIASES.items() if c == cap}
        which = [i for i, (_, n) in enumerate(jobs) if n & caps]
        if which:
            provider(exts, jobs, which, inputs, name)
    return exts


def _scatter(exts, jobs, which, values: dict) -> None:
    start = 0
    for i in which:
        n = len(jobs[i][0])
        for k, v in values.items():
            exts[i][k] = v[start:start + n]
        start += n
