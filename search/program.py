"""A program: ``def train(w, g, <state...>, lr[, t]): <assignments>; return update, <state...>``.

Statements assign one expression (a tree of :class:`Call`, :class:`Var` and :class:`Const`) to
a name. Inputs ``w`` (parameter), ``g`` (gradient), ``lr`` and optionally ``t`` (step, from
1); every other argument is a state variable that starts at zero and is returned updated
(Chen et al. 2023, Sec. 2). :meth:`Program.to_text` is the canonical print; the dataflow view
(a networkx DAG) lives in :mod:`search.graph`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .functions import CONSTANTS, FUNCTIONS, INPUTS

#: Size limits of the language (parse rejects more, abstract execution rejects children over
#: them): they bound recursion in printing/hashing and the batched interpreter's register file
#: (one slot per call). The Lion search's programs are far smaller.
MAX_STATEMENTS = 100
MAX_DEPTH = 32          # nesting of one expression
MAX_CALLS = 400         # calls in the whole program


def expr_depth(e: "Expr") -> int:
    """Nesting depth of an expression (a leaf is 1), computed without recursion."""
    depth, stack = 0, [(e, 1)]
    while stack:
        node, d = stack.pop()
        depth = max(depth, d)
        if isinstance(node, Call):
            stack.extend((a, d + 1) for a in node.args)
    return depth


def size_problem(statements) -> str | None:
    """Why ``statements`` exceed the language's limits, or None."""
    if len(statements) > MAX_STATEMENTS:
        return f"{len(statements)} statements (at most {MAX_STATEMENTS})"
    calls = 0
    for i, st in enumerate(statements):
        d = expr_depth(st.expr)
        if d > MAX_DEPTH:
            return f"statement {i + 1} is nested {d} deep (at most {MAX_DEPTH})"
        calls += len(expr_calls(st.expr))
    if calls > MAX_CALLS:
        return f"{calls} function calls (at most {MAX_CALLS})"
    return None


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Const:
    value: float


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple["Expr", ...]


Expr = Union[Var, Const, Call]


@dataclass(frozen=True)
class Statement:
    target: str
    expr: Expr


@dataclass(frozen=True)
class Program:
    """A parsed program. ``params`` is the signature in order; ``update`` the returned name."""

    params: tuple[str, ...]
    statements: tuple[Statement, ...]
    update: str = "update"
    meta: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def states(self) -> tuple[str, ...]:
        """The state variables, in signature order."""
        return tuple(p for p in self.params if p not in INPUTS)

    @property
    def uses_t(self) -> bool:
        return "t" in self.params

    def replace_statements(self, statements) -> "Program":
        return Program(self.params, tuple(statements), self.update)

    def to_text(self) -> str:
        """The canonical text: four-space indent, minimal parentheses, ``repr`` constants."""
        lines = [f"def train({', '.join(self.params)}):"]
        lines += [f"    {s.target} = {expr_text(s.expr)}" for s in self.statements]
        lines.append(f"    return {', '.join((self.update,) + self.states)}")
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.to_text()

    def __len__(self) -> int:
        return len(self.statements)


_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def expr_text(e: Expr) -> str:
    """Print an expression with the fewest parentheses that parse back to the same tree."""
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Const):
        return _const_text(e.value)
    f = FUNCTIONS[e.fn]
    if f.infix is None:
        return f"{e.fn}({', '.join(expr_text(a) for a in e.args)})"
    p = _PREC[f.infix]
    left = _wrap(e.args[0], p, right=False)
    right = _wrap(e.args[1], p, right=True)
    return f"{left} {f.infix} {right}"


def _wrap(e: Expr, parent_prec: int, right: bool) -> str:
    text = expr_text(e)
    if isinstance(e, Call) and FUNCTIONS[e.fn].infix is not None:
        p = _PREC[FUNCTIONS[e.fn].infix]
        if p < parent_prec or (right and p == parent_prec):
            return f"({text})"
    return text


def _const_text(v: float) -> str:
    """A constant as the parser reads it back: a name, a ``repr`` (exact round trip), and
    parentheses around negatives. Only finite constants exist (parse and mutation keep it)."""
    for name, value in CONSTANTS.items():
        if float(v) == value:
            return name
    text = repr(float(v))
    return text if v >= 0 else f"({text})"


def expr_vars(e: Expr) -> list[str]:
    """Names an expression reads, left to right."""
    if isinstance(e, Var):
        return [e.name]
    if isinstance(e, Call):
        return [n for a in e.args for n in expr_vars(a)]
    return []


def expr_calls(e: Expr) -> list[Call]:
    """Every call node of an expression, outermost first."""
    if isinstance(e, Call):
        return [e] + [c for a in e.args for c in expr_calls(a)]
    return []
