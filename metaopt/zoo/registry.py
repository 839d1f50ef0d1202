"""The zoo's registry: one entry per member, the only place its id is written.

An entry (:class:`Entry`) carries the member's id, its rule factory (whose rule holds the
defaults, checks and capabilities, :class:`metaopt.capabilities.Capabilities`) and its row of
the torch.optim contract table (``tests/metaopt/test_contract.py``): the sample
hyperparameters the contract checks use, the parameter dtypes it supports and documented
opt-outs (contract case -> reason). A member registered without ``sample`` has no row, and the
contract suite fails for it.

    zoo.create("adamw", model, lr=1e-3, decay_groups=True)   # decay on matrices only
    zoo.get("adamw")(params, lr=1e-3)                        # a torch.optim-style class
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping

import torch

from ..optimizer import RuleOptimizer
from ..rule import UpdateRule

ALL_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class Entry:
    """One member: ``name``, its ``factory`` (zero-argument, returns the rule with the
    official defaults) and its contract row (``sample`` hyperparameters, supported ``dtypes``,
    ``opt_out``: contract case -> why the member cannot honour it; ``matrices_only``: it
    refuses tensors of fewer than two dimensions, so the contract runs it on matrices)."""

    name: str
    factory: Callable[[], UpdateRule]
    sample: Mapping[str, Any] | None = None
    dtypes: tuple = ALL_DTYPES
    opt_out: Mapping[str, str] = field(default_factory=dict)
    matrices_only: bool = False


_ENTRIES: dict[str, Entry] = {}


def register(name: str, *, sample: Mapping[str, Any] | None = None, dtypes: tuple = ALL_DTYPES,
             opt_out: Mapping[str, str] | None = None, matrices_only: bool = False) -> Callable:
    """Decorator: register a zero-argument factory returning the rule with its defaults, with
    the member's contract row (see :class:`Entry`)."""

    def deco(factory: Callable[[], UpdateRule]) -> Callable[[], UpdateRule]:
        if name in _ENTRIES:
            raise ValueError(f"zoo member {name!r} registered twice")
        _ENTRIES[name] = Entry(name, factory, sample, tuple(dtypes), dict(opt_out or {}),
                               matrices_only)
        return factory

    return deco


def member_rule(init: Callable, update: Callable, **fields: Any) -> UpdateRule:
    """A member's rule as its registered factory writes it: every field but the id, which
    the registry fills in when it builds the member (:func:`rule`, :func:`create`,
    :func:`get`), so the id is written only in :func:`register`."""
    return UpdateRule("", init, update, **fields)


def names() -> list[str]:
    """Every registered baseline, sorted."""
    return sorted(_ENTRIES)


def entry(name: str) -> Entry:
    """The registry entry of member ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"zoo: an optimizer is named by its id (a string, one of "
                        f"{', '.join(names())}), got {type(name).__name__} {name!r}")
    key = name.lower()
    if key not in _ENTRIES:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(names())}")
    return _ENTRIES[key]


def member_id(factory: Callable[[], UpdateRule]) -> str:
    """The id ``factory`` is registered under, for a member's messages outside ``check``
    (which :meth:`UpdateRule.validate` names): the id stays written once, in ``@register``."""
    return next(e.name for e in _ENTRIES.values() if e.factory is factory)


def _build(name: str) -> UpdateRule:
    """The member's rule with its defaults, named by the registry (``origin`` lets pickle
    store it by id)."""
    rule_ = _ENTRIES[name].factory()
    return replace(rule_, name=name, origin=functools.partial(_build, name))


def rule(name: str | UpdateRule, **hp: Any) -> UpdateRule:
    """The member ``name`` (or an :class:`UpdateRule` itself) with ``hp`` overriding its
    defaults."""
    if isinstance(name, UpdateRule):
        return name.with_hp(**hp)
    return _build(entry(name).name).with_hp(**hp)


def defaults(name: str) -> dict[str, Any]:
    """The member's default hyperparameters (those of the official code)."""
    return dict(entry(name).factory().hp)


def create(name: str | UpdateRule, params: Iterable | torch.nn.Module, impl: str = "auto",
           decay_groups: bool = False, **hp: Any) -> RuleOptimizer:
    """The member ``name`` (or an :class:`UpdateRule`) as a ``torch.optim.Optimizer`` over
    ``params``: parameters, param groups, or an ``nn.Module`` (its named parameters). With
    ``decay_groups=True`` (a module only) weight decay applies to tensors of two or more
    dimensions (weights, kernels, embeddings) and not to biases and normalisation gains (the
    convention of GPT-2 / timm training code)."""
    base = rule(name) if isinstance(name, UpdateRule) else _build(entry(name).name)
    if decay_groups:
        if not isinstance(params, torch.nn.Module):
            raise TypeError("zoo.create: decay_groups=True needs an nn.Module as params")
        if "weight_decay" not in base.hp:
            raise ValueError(f"zoo.create: {base.name} has no weight_decay; decay_groups=True "
                             "does not apply")
        params = decay_param_groups(params)
    elif isinstance(params, torch.nn.Module):
        params = list(params.named_parameters())
    return RuleOptimizer(params, base, impl=impl, **hp)


def decay_param_groups(model: torch.nn.Module) -> list[dict]:
    """Two param groups of ``model``'s named parameters: those of two or more dimensions (the
    group's weight decay applies) and the others (``weight_decay=0``)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [(n, p) for n, p in named if p.dim() >= 2]
    no_decay = [(n, p) for n, p in named if p.dim() < 2]
    return [g for g in ({"params": decay}, {"params": no_decay, "weight_decay": 0.0})
            if g["params"]]


_CLASSES: dict[str, type] = {}


def get(name: str) -> type:
    """The member ``name`` as a ``torch.optim``-style class: ``get("adamw")(params, lr=1e-3)``
    (keyword arguments as for :func:`create`). Instances pickle like any optimizer."""
    key = entry(name).name
    if key not in _CLASSES:
        _CLASSES[key] = _make_class(key)
    return _CLASSES[key]


def _class_name(key: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in key.split("_"))


def _make_class(key: str) -> type:
    def __init__(self, params, impl: str = "auto", **hp: Any) -> None:
        RuleOptimizer.__init__(self, params, _build(key), impl=impl, **hp)

    doc = f"The zoo member {key!r} as a torch optimizer class (see metaopt.zoo.create)."
    return type(_class_name(key), (RuleOptimizer,),
                {"__init__": __init__, "__module__": __name__, "__doc__": doc})


def __getattr__(attr: str) -> type:
    """Module attribute access for the classes of :func:`get` (pickle finds them here)."""
    for key in names():
        if _class_name(key) == attr:
            return get(key)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")

