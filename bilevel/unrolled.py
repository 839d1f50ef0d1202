"""Unrolled (reverse-mode, "iterative differentiation") hypergradients.

    theta_0 given,  theta_{k+1} = theta_k - delta_rule(grad_theta g(theta_k, lam; batch_k), ...)
    F_K(lam) = f(theta_K(lam), lam),     returned: dF_K / dlam  by reverse mode through all K steps

(Maclaurin, Duvenaud & Adams, ICML 2015; Franceschi et al., ICML 2017). Any zoo rule can be
unrolled (``metaopt.rule.unroll``); its own hyperparameters (lr, weight decay, betas, ...) are
differentiable when ``rule_hp(hparams)`` returns them as tensors built from ``hparams``. Memory
grows linearly in K (every step is kept for the backward pass), unlike the implicit method.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from metaopt import zoo
from metaopt.rule import UpdateRule, unroll

from ._losses import check_loss
from ._tree import leaves_of, unflatten


def unrolled_hypergrad(inner_loss: Callable, outer_loss: Callable, params: Any, hparams: Any,
                       rule: UpdateRule | str, steps: int, *,
                       rule_hp: Callable[[Any], Mapping] | Mapping | None = None,
                       batches: Sequence[Any] | None = None, return_value: bool = False):
    """``d f(theta_K, hparams) / d hparams`` through ``steps`` steps of ``rule`` from ``params``.

    ``inner_loss(params, hparams)`` - or ``inner_loss(params, hparams, batch)`` when ``batches``
    (one per step) are given - and ``outer_loss(params, hparams)`` return scalars (the
    convention of :mod:`bilevel._losses`). ``rule`` is an ``UpdateRule`` or a zoo
    name; ``rule_hp`` maps ``hparams`` to the rule's hyperparameters (or is a fixed mapping).
    With ``return_value`` also returns ``F_K``.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("bilevel.unrolled_hypergrad: called under torch.inference_mode, where "
                           "torch.func derivatives are silently zero")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r}; it must be a positive integer")
    if batches is not None and len(batches) != steps:
        raise ValueError(f"got {len(batches)} batches for {steps} steps; pass one batch per step")
    check_loss(inner_loss, "inner_loss", batched=batches is not None)
    check_loss(outer_loss, "outer_loss", batched=False)
    the_rule = zoo.rule(rule) if isinstance(rule, str) else rule
    p_leaves, p_spec = leaves_of(params, "params")
    leaves_of(hparams, "hparams")
    start = [p.detach() for p in p_leaves]
    batch_list = list(batches) if batches is not None else [None] * steps
    call = inner_loss if batches is not None else (lambda p, h, _: inner_loss(p, h))

    def objective(h):
        hp = rule_hp(h) if callable(rule_hp) else rule_hp
        loss = lambda ps, batch: call(unflatten(ps, p_spec), h, batch)  # noqa: E731
        final, _, _ = unroll(the_rule, loss, start, batch_list, hp)
        return outer_loss(unflatten(final, p_spec), h)

    grad, value = torch.func.grad_and_value(objective)(hparams)
    return (grad, value) if return_value else grad
