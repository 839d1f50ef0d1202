"""One truncation of inner training driven by a learned optimizer: the pure, vmappable core
of every meta-gradient estimator (PES, ES, TBPTT).

For a truncation of length T starting after ``step`` updates, with batches ``b_0 .. b_T``:

    for k = 0 .. T-1:   g_k = grad L(p_k, b_k);   p_{k+1} = p_k - LO_theta(g_k, p_k, s_k, step+k+1)
    l_k = L(p_k, b_k)   for k = 1 .. T            (the loss after k updates, on a fresh batch)

and the truncation's meta-loss is ``mean(l_1 .. l_T)`` ("mean_train_loss", learned_optimization's
default), ``l_T`` ("final_train_loss") or ``mean(log l_1 .. log l_T)`` ("mean_log_train_loss").
Summed over an inner run, the mean loss is dominated by the large early losses, so it rewards
fast early progress even at the price of a worse final loss; the log counts a relative
improvement the same at every loss level (``d log l = dl / l``), so the small late losses, and
the final one, weigh as much as the early ones (an LO must not trade its end for its start). Every op is out of place and branch free, so the function
is differentiable in ``theta`` (``torch.func.grad`` through it is truncated BPTT) and can be
``torch.func.vmap``-ed over particles (perturbed thetas, tasks, inner states).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from metaopt.rule import apply

from .base import LOpt, Theta
from .pytree import tree_index

META_LOSSES = ("mean_train_loss", "final_train_loss", "mean_log_train_loss")


def check_meta_loss(meta_loss: str) -> str:
    if meta_loss not in META_LOSSES:
        raise ValueError(f"unknown meta_loss {meta_loss!r}; allowed: {', '.join(META_LOSSES)}")
    return meta_loss


def truncation_meta_loss(losses: Tensor, meta_loss: str) -> Tensor:
    """The meta-loss of one truncation from its losses ``l_1 .. l_T`` (see the module docstring)."""
    if meta_loss == "mean_train_loss":
        return losses.mean()
    if meta_loss == "final_train_loss":
        return losses[-1]
    return torch.log(losses.clamp_min(torch.finfo(losses.dtype).tiny)).mean()  # 0 stays finite


def lopt_step(lopt: LOpt, theta: Theta, params: list[Tensor], grads: list[Tensor],
              states: list[dict], step: Tensor, infos: list | None
              ) -> tuple[list[Tensor], list[dict]]:
    """One functional LO step over a list of tensors: :func:`metaopt.rule.apply` of
    ``lopt.rule(theta)`` with each tensor's ``info`` as its per-tensor hyperparameter."""
    hp = None if infos is None else [{"info": info} for info in infos]
    return apply(lopt.rule(theta), params, grads, states, step, hp)


def make_unroll(lopt: LOpt, loss_fn: Callable[[list[Tensor], Any], Tensor], infos: list,
                truncation: int, meta_loss: str = "mean_train_loss") -> Callable:
    """``unroll(theta, params, states, step, batches) -> (meta_loss, (params, states, step, ok))``.

    ``batches`` is a tree with a leading axis of ``truncation + 1``; ``step`` is a 0-d float
    tensor (updates done so far); ``ok`` is a 0-d bool tensor, True when the meta-loss and every
    new parameter are finite.
    """
    check_meta_loss(meta_loss)
    grad_and_loss = torch.func.grad_and_value(lambda ps, b: loss_fn(list(ps), b))
    hp = [{"info": info} for info in infos]

    def unroll(theta, params, states, step, batches):
        params, states, rule = list(params), list(states), lopt.rule(theta)
        after = []
        for k in range(truncation):
            grads, loss = grad_and_loss(tuple(params), tree_index(batches, k))
            if k > 0:
                after.append(loss)
            params, states = apply(rule, params, list(grads), states, step + (k + 1), hp)
        after.append(loss_fn(params, tree_index(batches, truncation)))
        losses = torch.stack(after)
        value = truncation_meta_loss(losses, meta_loss)
        finite = torch.stack([value.isfinite()] + [p.isfinite().all() for p in params]).all()
        return value, (params, states, step + truncation, finite)

    return unroll
