"""Abstract execution: infer each value's type without running anything, and reject children
that cannot be trained (the Lion search's type/shape inference, Chen et al. 2023, Sec. 2.2).

Types are ``T`` (shaped like the parameter) and ``S`` (scalar); see :mod:`search.functions`.
A program is valid when every name is assigned before it is read, every call is well typed
(no reduction of a scalar), the update is a tensor, and the update depends on the gradient
``g`` at some step (through the states too), so training can move.
"""
from __future__ import annotations

from .functions import INPUT_TYPES, result_type
from .graph import prune
from .program import Call, Const, Expr, Program, Var, expr_vars, size_problem


class InvalidProgram(ValueError):
    """A program that abstract execution rejects; the message says why."""


def infer_types(prog: Program) -> dict[str, str]:
    """The type of every variable after the program's statements; raises InvalidProgram."""
    env = {p: INPUT_TYPES.get(p, "T") for p in prog.params}
    for i, st in enumerate(prog.statements):
        env[st.target] = _type(st.expr, env, i)
    if prog.update not in env:
        raise InvalidProgram(f"the update {prog.update!r} is never assigned")
    return env


def _type(e: Expr, env: dict, i: int) -> str:
    if isinstance(e, Var):
        if e.name not in env:
            raise InvalidProgram(f"statement {i}: {e.name!r} is read before it is assigned")
        return env[e.name]
    if isinstance(e, Const):
        return "S"
    assert isinstance(e, Call)
    args = [_type(a, env, i) for a in e.args]
    out = result_type(e.fn, args)
    if out is None:
        raise InvalidProgram(f"statement {i}: {e.fn}() of a scalar is ill-typed")
    return out


def check(prog: Program) -> Program:
    """Validate ``prog`` and return it pruned of dead code; raises InvalidProgram."""
    problem = size_problem(prog.statements)
    if problem:
        raise InvalidProgram(f"program too large: {problem}")
    types = infer_types(prog)
    if types[prog.update] != "T":
        raise InvalidProgram("the update is a scalar, not a tensor")
    pruned = prune(prog)
    if not _reads_gradient(pruned):
        raise InvalidProgram("the update never depends on the gradient g")
    return pruned


def _reads_gradient(prog: Program) -> bool:
    """Forward taint from ``g`` through the statements, carried by states across steps until
    nothing new is tainted; True when the update is tainted."""
    tainted_states: set[str] = set()
    while True:
        tainted = {"g"} | tainted_states
        for st in prog.statements:
            if any(v in tainted for v in expr_vars(st.expr)):
                tainted.add(st.target)
            else:
                tainted.discard(st.target)
        if prog.update in tainted:
            return True
        new = {s for s in prog.states if s in tainted} | tainted_states
        if new == tainted_states:
            return False
        tainted_states = new
