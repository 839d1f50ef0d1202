"""Task families: the distribution of inner problems a learned optimizer is meta-trained on.

A family has

    family.sample(generator) -> metaopt.tasks.Task   # one inner problem
    family.horizon           -> int                  # inner training steps before a reset
    family.vmappable         -> bool

``vmappable`` promises that every sampled task has the same parameter shapes and the same loss
*as a function of (params, batch)*, so meta-training may stack many tasks' inner states and run
them through one ``torch.func.vmap`` with the first task's ``loss``. Tasks then differ only in
their initialisation and batch stream (a fresh seed per sample). Families whose tasks hold
different data or shapes set it False and are run one task at a time (each task's antithetic
particles are still vmapped).

Following learned_optimization's ``tasks/parametric`` (task families that sample a config and
build a task from it).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from metaopt import tasks
from metaopt.tasks import Task


class TaskFamily:
    """Base class; subclasses set ``name``, ``horizon``, ``vmappable`` and implement ``sample``."""

    name: str = "family"
    horizon: int = 100
    vmappable: bool = False

    def sample(self, generator: torch.Generator) -> Task:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, horizon={self.horizon})"


def _check_horizon(horizon: int) -> int:
    if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1:
        raise ValueError(f"task family: horizon must be an integer >= 1, got {horizon!r}")
    return horizon


class SingleTask(TaskFamily):
    """One task; every sample is the same problem with a fresh initialisation and batch stream.

    Always vmappable: the loss is one function of (params, batch)."""

    vmappable = True

    def __init__(self, task: Task, horizon: int):
        if not isinstance(task, Task):
            raise ValueError(f"SingleTask needs a metaopt.tasks.Task, got {type(task).__name__}")
        self.task, self.horizon, self.name = task, _check_horizon(horizon), task.name

    def sample(self, generator: torch.Generator) -> Task:
        return self.task


class TaskChoice(TaskFamily):
    """A registered task with some options drawn uniformly per sample.

    ``TaskChoice("mlp_digits", horizon=200, choices={"width": [64, 128]}, param="mup")`` builds
    ``tasks.get("mlp_digits", width=w, param="mup")`` with ``w`` drawn per sample. Built tasks are
    cached per option set. Vmappable only when no option has more than one value (then it is a
    :class:`SingleTask` in disguise); otherwise tasks run one at a time.
    """

    def __init__(self, task_name: str, horizon: int,
                 choices: dict[str, Sequence[Any]] | None = None,
                 device: str | torch.device = "cpu", **fixed: Any):
        self.name, self.horizon = task_name, _check_horizon(horizon)
        self.choices = {k: list(v) for k, v in (choices or {}).items()}
        for k, v in self.choices.items():
            if not v:
                raise ValueError(f"task family {task_name!r}: option {k!r} has no values "
                                 "to choose from")
        both = sorted(set(self.choices) & set(fixed))
        if both:
            raise ValueError(f"task family {task_name!r}: option(s) {both} both fixed and chosen")
        self.fixed = {**fixed, "device": device}
        self.vmappable = all(len(v) == 1 for v in self.choices.values())
        self._cache: dict[tuple, Task] = {}
        self.sample(torch.Generator().manual_seed(0))  # fail now on a bad name or option

    def __repr__(self) -> str:
        fixed = {k: v for k, v in self.fixed.items() if k != "device"}
        return (f"TaskChoice({self.name!r}, horizon={self.horizon}, choices={self.choices!r}, "
                f"fixed={fixed!r})")

    def sample(self, generator: torch.Generator) -> Task:
        picked = {k: v[int(torch.randint(len(v), (), generator=generator))]
                  for k, v in self.choices.items()}
        key = tuple(sorted((k, repr(v)) for k, v in picked.items()))
        if key not in self._cache:
            self._cache[key] = tasks.get(self.name, **self.fixed, **picked)
        return self._cache[key]
