"""A task's training and validation data as tensors indexed by example, so that a tuner can
draw indexed minibatches (example weights need the index) and validation minibatches.

* digits tasks (``x_train``, ``y_train``, ``x_val``, ``y_val``): the images and labels;
* :func:`metaopt.tasks.from_module` tasks (``train_data``, ``val_data``): their tensors;
* ``charlm`` (``train_text``, ``val_text``, ``context``): non-overlapping windows of
  ``context + 1`` bytes, split into inputs and next-byte targets.

A batch is the tuple of the indexed tensors, which is what each task's ``loss`` takes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Examples:
    train: tuple[Tensor, ...]
    val: tuple[Tensor, ...]

    @property
    def n_train(self) -> int:
        return len(self.train[0])

    @property
    def n_val(self) -> int:
        return len(self.val[0])

    def batch(self, which: str, idx: Tensor) -> tuple[Tensor, ...]:
        return tuple(t[idx] for t in (self.train if which == "train" else self.val))

    def indices(self, which: str, size: int, generator: torch.Generator) -> Tensor:
        n = self.n_train if which == "train" else self.n_val
        dev = self.train[0].device
        return torch.randint(n, (size,), generator=generator, device=generator.device).to(dev)


def examples_of(task) -> Examples:
    """The task's data as :class:`Examples`; a task of another shape is a one-line error."""
    if all(hasattr(task, a) for a in ("x_train", "y_train", "x_val", "y_val")):
        return Examples((task.x_train, task.y_train), (task.x_val, task.y_val))
    if hasattr(task, "train_data") and hasattr(task, "val_data"):
        return Examples(tuple(task.train_data), tuple(task.val_data))
    if all(hasattr(task, a) for a in ("train_text", "val_text", "context")):
        return Examples(_windows(task.train_text, task.context), _windows(task.val_text, task.context))
    raise ValueError(f"task {getattr(task, 'name', task)!r} exposes no indexable data (x_train/y_train, "
                     "train_data/val_data or train_text/val_text); build it with metaopt.tasks.from_module")


def _windows(text: Tensor, context: int) -> tuple[Tensor, Tensor]:
    n = (len(text) - 1) // (context + 1)
    chunk = text[: n * (context + 1)].reshape(n, context + 1).long()
    return chunk[:, :-1], chunk[:, 1:]
