"""Meta-gradient estimators, one class per file, found by name in a registry.

Every module of this package is imported when the package is, and registers its
:class:`~learned.estimators.base.Estimator` subclass with :func:`register`; adding an estimator
is adding one file here (``meta_train(method=<its name>)`` and ``metaopt meta-train --method``
then accept it). ``pes`` (persistent ES), ``es`` (antithetic truncated ES) and ``tbptt``
(truncated backprop) ship with metaopt. A slot whose loss, parameters or gradient estimate is
not finite is logged, left out of the average, and reset; it never reaches ``theta``.
"""
from __future__ import annotations

import importlib
import pkgutil

import torch

ESTIMATORS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make ``cls`` available as ``method=cls.name``."""
    if cls.name in ESTIMATORS and ESTIMATORS[cls.name] is not cls:
        raise ValueError(f"meta-training estimator {cls.name!r} is registered twice")
    ESTIMATORS[cls.name] = cls
    return cls


def methods() -> tuple[str, ...]:
    """The registered estimator names, in registration order."""
    return tuple(ESTIMATORS)


def check_method(method: str) -> str:
    if method not in ESTIMATORS:
        raise ValueError(f"unknown meta-training method {method!r}; allowed: "
                         f"{', '.join(ESTIMATORS)}")
    return method


def get(method: str) -> type:
    """The estimator class registered as ``method``."""
    return ESTIMATORS[check_method(method)]


def estimate(method: str, pool, theta, std: float, generator: torch.Generator):
    """One estimate of a *stateless* estimator (TBPTT, ES) over an existing pool, e.g. to test
    it on a hand-built :class:`~learned.pool.InnerPool`. PES keeps per-slot state between
    estimates: make one ``get("pes")(..., pool=pool)`` and call its ``estimate`` instead."""
    cls = get(method)
    if cls.stateful:
        raise ValueError(f"{method} keeps state between estimates; use "
                         f"learned.estimators.get({method!r})(..., pool=pool).estimate")
    return cls(pool.lopt, pool.family, pool.num_tasks, std=std, pool=pool).estimate(theta,
                                                                                   generator)


_FIRST = ("pes", "es", "tbptt")  # the built-ins lead the list (pes is the default)
for _name in [*_FIRST, *sorted(m.name for m in pkgutil.iter_modules(__path__))]:
    if _name != "base":
        importlib.import_module(f"{__name__}.{_name}")

METHODS = methods()  # the built-in and any added estimator (fixed at import)
