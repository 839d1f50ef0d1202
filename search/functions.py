"""The function set of the program language: the Lion paper's ~45 functions.

Chen et al., "Symbolic Discovery of Optimization Algorithms" (NeurIPS 2023), Sec. 2 and App. H:
arithmetic, ``interp(x, y, a) = (1 - a) x + a y``, elementwise unary maths (``sqrt`` and ``log``
of ``|x|`` so they are defined everywhere), tree-level reductions (``global_norm``, ``dot``,
``cosine_sim``, ``clip_by_global_norm``) and the constants ``pi``, ``e`` and ``eps``.

Every value in a program has one of two types: ``T`` (a tensor shaped like the parameter) or
``S`` (a scalar). Elementwise functions broadcast; reductions need tensor arguments (a
reduction of a broadcast scalar would depend on the tensor size) and return a scalar.

Each implementation takes its arguments and ``dim``: ``None`` reduces over the whole tensor (the
rule is applied to one tensor), ``-1`` reduces each row of a ``[rows, D]`` batch separately (the
batched interpreter, one row per candidate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

EPS = 1e-8
CONSTANTS = {"pi": math.pi, "e": math.e, "eps": EPS}
INPUTS = ("w", "g", "lr", "t")
INPUT_TYPES = {"w": "T", "g": "T", "lr": "S", "t": "S"}


@dataclass(frozen=True)
class Function:
    """One function: ``arity``, ``kind`` (``elementwise`` | ``reduce`` | ``tree``),
    ``tensor_args`` (positions that must be tensors), ``commutative`` (argument order is
    irrelevant, used by the structural hash) and ``fn(*args, dim)``."""

    name: str
    arity: int
    fn: Callable
    kind: str = "elementwise"
    tensor_args: tuple[int, ...] = ()
    commutative: bool = False
    infix: str | None = None


def _sum(x, dim):
    return x.sum() if dim is None else x.sum(dim=-1, keepdim=True)


def _norm(x, dim):
    return _sum(x * x, dim).sqrt()


def _clip_by_global_norm(x, c, dim):
    """``x * min(1, |c| / ||x||)``: rescale ``x`` so its norm is at most ``|c|``."""
    n = _norm(x, dim)
    return x * torch.clamp(c.abs() / (n + EPS), max=1.0)


def _cosine_sim(x, y, dim):
    return _sum(x * y, dim) / (_norm(x, dim) * _norm(y, dim) + EPS)


def _unary(name: str, fn) -> Function:
    return Function(name, 1, lambda x, dim: fn(x))


_UNARY = {
    "abs": torch.abs, "sign": torch.sign, "square": torch.square, "cube": lambda x: x * x * x,
    "sqrt": lambda x: x.abs().sqrt(), "rsqrt": lambda x: x.abs().rsqrt(),
    "exp": torch.exp, "exp2": torch.exp2, "expm1": torch.expm1,
    "log": lambda x: x.abs().log(), "log2": lambda x: x.abs().log2(),
    "log10": lambda x: x.abs().log10(), "log1p": lambda x: x.abs().log1p(),
    "reciprocal": torch.reciprocal, "neg": torch.neg,
    "sin": torch.sin, "cos": torch.cos, "tan": torch.tan,
    "arcsin": torch.asin, "arccos": torch.acos, "arctan": torch.atan,
    "sinh": torch.sinh, "cosh": torch.cosh, "tanh": torch.tanh,
    "arcsinh": torch.asinh, "arccosh": torch.acosh, "arctanh": torch.atanh,
    "sigmoid": torch.sigmoid, "relu": torch.relu, "erf": torch.erf,
}

FUNCTIONS: dict[str, Function] = {
    "add": Function("add", 2, lambda x, y, dim: x + y, commutative=True, infix="+"),
    "sub": Function("sub", 2, lambda x, y, dim: x - y, infix="-"),
    "mul": Function("mul", 2, lambda x, y, dim: x * y, commutative=True, infix="*"),
    "div": Function("div", 2, lambda x, y, dim: x / y, infix="/"),
    "max": Function("max", 2, lambda x, y, dim: torch.maximum(x, y), commutative=True),
    "min": Function("min", 2, lambda x, y, dim: torch.minimum(x, y), commutative=True),
    "interp": Function("interp", 3, lambda x, y, a, dim: (1 - a) * x + a * y),
    "clip": Function("clip", 2, lambda x, c, dim: torch.maximum(torch.minimum(x, c.abs()), -c.abs())),
    "power": Function("power", 2, lambda x, y, dim: x.abs().pow(y)),
    "global_norm": Function("global_norm", 1, _norm, "reduce", (0,)),
    "dot": Function("dot", 2, lambda x, y, dim: _sum(x * y, dim), "reduce", (0, 1), True),
    "cosine_sim": Function("cosine_sim", 2, _cosine_sim, "reduce", (0, 1), True),
    "clip_by_global_norm": Function("clip_by_global_norm", 2, _clip_by_global_norm, "tree", (0,)),
    **{name: _unary(name, fn) for name, fn in _UNARY.items()},
}
"""Every callable function by name (``add``/``sub``/``mul``/``div`` are written infix)."""

CALLABLE = sorted(n for n, f in FUNCTIONS.items() if f.infix is None)
RESERVED = set(FUNCTIONS) | set(CONSTANTS)


def result_type(name: str, arg_types: list[str]) -> str | None:
    """The type (``"T"``/``"S"``) of ``name`` applied to arguments of ``arg_types``, or None
    when the call is ill-typed (a reduction of a scalar)."""
    f = FUNCTIONS[name]
    if any(arg_types[i] != "T" for i in f.tensor_args):
        return None
    if f.kind == "reduce":
        return "S"
    return "T" if "T" in arg_types else "S"
