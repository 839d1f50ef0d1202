"""Bilevel test problems: ``get(name, **kw)`` and ``names()``."""
from __future__ import annotations

import inspect

from .base import BilevelProblem
from .hyperclean import HypercleanDigits
from .logreg import LogregDigits
from .mlp_wd import MLPWeightDecay
from .ridge import Ridge
from .task_head import TaskHead

_PROBLEMS = {cls.name: cls for cls in (Ridge, LogregDigits, HypercleanDigits, MLPWeightDecay, TaskHead)}


def names() -> list[str]:
    """Every problem, sorted."""
    return sorted(_PROBLEMS)


def get(name: str, **kw) -> BilevelProblem:
    """Build problem ``name``; unknown names or options are a one-line ``ValueError``."""
    if name not in _PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; choose one of: {', '.join(names())}")
    cls = _PROBLEMS[name]
    allowed = [k for k in inspect.signature(cls).parameters]
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ValueError(f"problem {name!r}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    return cls(**kw)


__all__ = ["BilevelProblem", "HypercleanDigits", "LogregDigits", "MLPWeightDecay", "Ridge", "TaskHead", "get", "names"]
