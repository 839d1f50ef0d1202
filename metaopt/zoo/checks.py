"""Hyperparameter validation shared by the zoo: one-line errors that name the parameter, its
value and the allowed range.

A member's check calls these without its id: they raise
:class:`~metaopt.rule.HyperparameterError` and the rule's :meth:`~metaopt.rule.UpdateRule.validate`
prefixes the id the registry gave it (``"adam: invalid lr=-1.0: must be >= 0.0"``). Code that
checks outside a rule passes ``name=`` and gets that ``ValueError`` directly."""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from ..rule import HyperparameterError


def _num(v: Any) -> float | None:
    if isinstance(v, torch.Tensor):
        return None if v.requires_grad or v.numel() != 1 or v.device.type == "meta" else v.item()
    return float(v)


def fail(message: str, name: str = "") -> None:
    """Raise ``message``: a ``ValueError`` prefixed with ``name`` when given, else a
    :class:`HyperparameterError` for the rule's ``validate`` to name."""
    if name:
        raise ValueError(f"{name}: {message}")
    raise HyperparameterError(message)


def check_min(hp: Mapping, key: str, low: float = 0.0, strict: bool = False, name: str = "") -> None:
    """``hp[key] >= low`` (``> low`` when ``strict``); tensors that require grad are skipped."""
    v = _num(hp[key])
    if v is None:
        return
    bad = (v <= low) if strict else (v < low)
    if bad or math.isnan(v):
        op = ">" if strict else ">="
        fail(f"invalid {key}={v}: must be {op} {low}", name)


def check_unit(hp: Mapping, key: str, name: str = "", closed: bool = False) -> None:
    """``0 <= hp[key] < 1`` (``<= 1`` when ``closed``)."""
    v = _num(hp[key])
    if v is None:
        return
    if not (0.0 <= v <= 1.0 if closed else 0.0 <= v < 1.0):
        rng = "[0, 1]" if closed else "[0, 1)"
        fail(f"invalid {key}={v}: must be in {rng}", name)


def check_betas(hp: Mapping, n: int = 2, name: str = "", closed: bool = False) -> None:
    """``betas`` is a tuple of ``n`` numbers, each in ``[0, 1)`` (``[0, 1]`` when ``closed``)."""
    betas = hp["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != n:
        fail(f"invalid betas={betas!r}: must be a tuple of {n} numbers in [0, 1)", name)
    for i, b in enumerate(betas):
        check_unit({f"betas[{i}]": b}, f"betas[{i}]", name, closed)


def check_int(hp: Mapping, key: str, low: int = 0, name: str = "") -> None:
    """``hp[key]`` is an integer (not a bool) ``>= low``."""
    v = hp[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        fail(f"invalid {key}={v!r}: must be an integer >= {low}", name)


def check_choice(hp: Mapping, key: str, choices: tuple, name: str = "") -> None:
    """``hp[key]`` is one of ``choices``."""
    if hp[key] not in choices:
        fail(f"invalid {key}={hp[key]!r}: must be one of {choices}", name)
