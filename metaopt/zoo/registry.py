"""The zoo's registry: lower-case ids -> rule factories."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from ..optimizer import RuleOptimizer
from ..rule import UpdateRule

_FACTORIES: dict[str, Callable[[], UpdateRule]] = {}


def register(name: str) -> Callable:
    """Decorator: register a zero-argument factory returning the rule with its defaults."""

    def deco(factory: Callable[[], UpdateRule]) -> Callable[[], UpdateRule]:
        if name in _FACTORIES:
            raise ValueError(f"zoo member {name!r} registered twice")
        _FACTORIES[name] = factory
        return factory

    return deco


def names() -> list[str]:
    """Every registered baseline, sorted."""
    return sorted(_FACTORIES)


def _lookup(name: str) -> Callable[[], UpdateRule]:
    key = name.lower()
    if key not in _FACTORIES:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(names())}")
    return _FACTORIES[key]


def rule(name: str, **hp: Any) -> UpdateRule:
    """The member ``name`` as an :class:`UpdateRule` with ``hp`` overriding its defaults."""
    return _lookup(name)().with_hp(**hp)


def defaults(name: str) -> dict[str, Any]:
    """The member's default hyperparameters (those of the official code)."""
    return dict(_lookup(name)().hp)


def create(name: str, params: Iterable, impl: str = "auto", **hp: Any) -> torch.optim.Optimizer:
    """The member ``name`` as a ``torch.optim.Optimizer`` over ``params``."""
    return RuleOptimizer(params, _lookup(name)(), impl=impl, **hp)
