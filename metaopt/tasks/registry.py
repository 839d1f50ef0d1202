"""Task registry: ``tasks.get(name, **kw)`` and ``tasks.names()``."""
from __future__ import annotations

import inspect
from typing import Any, Callable

from .base import Task

_TASKS: dict[str, Callable[..., Task]] = {}


def register(name: str) -> Callable:
    """Decorator registering a task class (or factory) under ``name``."""

    def deco(factory):
        if name in _TASKS:
            raise ValueError(f"task {name!r} registered twice")
        _TASKS[name] = factory
        return factory

    return deco


def names() -> list[str]:
    """Every registered task, sorted."""
    return sorted(_TASKS)


def get(name: str, **kw: Any) -> Task:
    """Build the task ``name``; unknown names and keywords are one-line ``ValueError``s."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(names())}")
    factory = _TASKS[name]
    params = inspect.signature(factory).parameters
    unknown = sorted(k for k in kw if k not in params)
    if unknown:
        allowed = sorted(k for k in params if k != "self")
        raise ValueError(f"task {name!r}: unknown option(s) {unknown}; allowed: {allowed}")
    return factory(**kw)
