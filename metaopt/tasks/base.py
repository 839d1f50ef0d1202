"""The task interface: a functional training problem.

A task's parameters are a list of tensors, and its loss is a pure function of them, so a task
can be differentiated through (``torch.func.grad``) and vmapped over a population axis.

    task.init(generator)          -> list[Tensor]      fresh parameters
    task.loss(params, batch)      -> scalar Tensor     training loss on a batch
    task.sample_batch(generator)  -> batch             one training batch (tensors)
    task.batches(generator)       -> endless iterator of batches
    task.evaluate(params)         -> {"val_loss": float, "accuracy": float (classification)}
    task.param_info               -> [ParamInfo]       role and fans of each tensor (for μP)
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import Tensor

from ..params import ROLES, ParamInfo  # noqa: F401  (re-exported: metaopt.tasks.ParamInfo)


class Task:
    """Base class of every task; subclasses set ``name`` and implement the four methods."""

    name: str = "task"
    #: the minimum training loss when known in closed form (quadratic), else None
    optimum: float | None = None

    def __init__(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        self.dtype = dtype

    @property
    def param_info(self) -> list[ParamInfo]:
        raise NotImplementedError

    def init(self, generator: torch.Generator | None = None) -> list[Tensor]:
        raise NotImplementedError

    def loss(self, params: list[Tensor], batch: Any) -> Tensor:
        raise NotImplementedError

    def sample_batch(self, generator: torch.Generator | None = None) -> Any:
        raise NotImplementedError

    def evaluate(self, params: list[Tensor]) -> dict[str, float]:
        raise NotImplementedError

    def batches(self, generator: torch.Generator | None = None) -> Iterator[Any]:
        """An endless iterator of training batches."""
        while True:
            yield self.sample_batch(generator)

    def generator(self, seed: int) -> torch.Generator:
        """A generator on this task's device seeded with ``seed``."""
        g = torch.Generator(device=self.device)
        g.manual_seed(seed)
        return g

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device}, dtype={self.dtype})"
