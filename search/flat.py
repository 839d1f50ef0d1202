"""A task's parameters as one flat vector, so a program sees the whole parameter tree at once
(its tree-level functions reduce over all of it, as in the Lion search) and a population of
candidates is a ``[rows, D]`` matrix."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class FlatTask:
    """``loss(theta, batch)`` and ``evaluate(theta)`` of ``task`` on a flat vector ``theta``."""

    def __init__(self, task):
        self.task = task
        self.shapes = [tuple(p.shape) for p in task.init(task.generator(0))]
        self.sizes = [int(torch.Size(s).numel()) for s in self.shapes]
        self.dim = sum(self.sizes)

    def unflatten(self, theta: Tensor) -> list[Tensor]:
        out, start = [], 0
        for shape, size in zip(self.shapes, self.sizes):
            out.append(theta[..., start:start + size].reshape(theta.shape[:-1] + shape))
            start += size
        return out

    def init(self, seed: int) -> tuple[Tensor, torch.Generator]:
        """Flat initial parameters for ``seed`` and the generator that then draws its batches."""
        gen = self.task.generator(seed)
        return torch.cat([p.reshape(-1) for p in self.task.init(gen)]), gen

    def loss(self, theta: Tensor, batch: Any) -> Tensor:
        return self.task.loss(self.unflatten(theta), batch)

    def val_losses(self, thetas: Tensor) -> list[float]:
        """Validation loss of each row of ``thetas`` [N, D]: one vmapped call when the task has
        a tensor-valued ``val_loss_fn(params)`` (must equal ``evaluate()["val_loss"]``), else
        ``task.evaluate`` row by row."""
        fn = getattr(self.task, "val_loss_fn", None)
        if fn is None:
            return [self.val_loss(t) for t in thetas]
        with torch.no_grad():
            try:
                vals = torch.vmap(lambda th: fn(self.unflatten(th)))(thetas)
            except RuntimeError:  # a loss without a vmap rule for this case: row by row
                return [self.val_loss(t) for t in thetas]
            ok = torch.isfinite(vals) & torch.isfinite(thetas).all(dim=-1)
            vals = torch.where(ok, vals, torch.full_like(vals, float("inf")))
        return [float(v) for v in vals.cpu()]

    def val_loss(self, theta: Tensor) -> float:
        """The task's validation loss (``inf`` when not finite)."""
        if not bool(torch.isfinite(theta).all()):
            return float("inf")
        value = float(self.task.evaluate(self.unflatten(theta.detach()))["val_loss"])
        return value if value == value and abs(value) != float("inf") else float("inf")


def expand_batch(batch: Any, n: int) -> Any:
    """Repeat a seed-stacked batch ``[S, ...]`` over ``n`` rows as ``[S, n, ...]`` (a view, no
    copy), so every row's loss sees a batched target: some vmap rules (``mse_loss`` with one
    batched and one unbatched argument) fail on a shared one."""
    if isinstance(batch, Tensor):
        return batch.unsqueeze(1).expand(batch.shape[0], n, *batch.shape[1:])
    if isinstance(batch, (tuple, list)):
        return type(batch)(expand_batch(b, n) for b in batch)
    if isinstance(batch, dict):
        return {k: expand_batch(v, n) for k, v in batch.items()}
    raise ValueError(f"cannot expand batches of type {type(batch).__name__}")


def stack_batches(batches: list) -> Any:
    """Stack same-structured batches (tensors, tuples, lists, dicts) along a new axis 0."""
    first = batches[0]
    if isinstance(first, Tensor):
        return torch.stack(batches)
    if isinstance(first, (tuple, list)):
        return type(first)(stack_batches([b[i] for b in batches]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: stack_batches([b[k] for b in batches]) for k in first}
    raise ValueError(f"cannot stack batches of type {type(first).__name__}")
