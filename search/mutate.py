"""Mutations (Chen et al. 2023, Sec. 2.2; Real et al. 2020): insert a random statement, delete
one, replace a statement's expression, change one argument, or perturb a constant (redraw it
from N(0, 1) or multiply it by 2^a, a ~ N(0, 1)). Children that abstract execution rejects are
re-mutated from the parent (:func:`valid_child`).
"""
from __future__ import annotations

import math
import random

from .check import InvalidProgram, check
from .functions import CALLABLE, FUNCTIONS, INPUTS
from .program import Call, Const, Expr, Program, Statement, Var

MUTATIONS = ("insert", "delete", "modify_statement", "modify_argument", "perturb_constant")
ARITHMETIC = ("add", "sub", "mul", "div")
_P_CONST = 0.2
MAX_TRIES = 200


def _const(rng: random.Random) -> float:
    return float(f"{rng.gauss(0.0, 1.0):.4g}")


def _names_before(prog: Program, i: int) -> list[str]:
    names = list(prog.params)
    for st in prog.statements[:i]:
        if st.target not in names:
            names.append(st.target)
    return names


def _leaf(rng: random.Random, names: list[str]) -> Expr:
    return Const(_const(rng)) if rng.random() < _P_CONST else Var(rng.choice(names))


def random_call(rng: random.Random, names: list[str]) -> Call:
    """A call of a random function (arithmetic as likely as any other) on random leaves."""
    fn = rng.choice(ARITHMETIC) if rng.random() < 0.3 else rng.choice(CALLABLE)
    return Call(fn, tuple(_leaf(rng, names) for _ in range(FUNCTIONS[fn].arity)))


def _target(rng: random.Random, prog: Program, names: list[str]) -> str:
    own = [n for n in names if n not in INPUTS] + [prog.update]
    if rng.random() < 0.7:
        return rng.choice(own)
    k = 0
    while f"v{k}" in names or f"v{k}" in {s.target for s in prog.statements}:
        k += 1
    return f"v{k}"


def insert(prog: Program, rng: random.Random) -> Program:
    i = rng.randint(0, len(prog.statements))
    names = _names_before(prog, i)
    st = Statement(_target(rng, prog, names), random_call(rng, names))
    return prog.replace_statements(prog.statements[:i] + (st,) + prog.statements[i:])


def delete(prog: Program, rng: random.Random) -> Program:
    if not prog.statements:
        return prog
    i = rng.randrange(len(prog.statements))
    return prog.replace_statements(prog.statements[:i] + prog.statements[i + 1:])


def modify_statement(prog: Program, rng: random.Random) -> Program:
    if not prog.statements:
        return insert(prog, rng)
    i = rng.randrange(len(prog.statements))
    st = Statement(prog.statements[i].target, random_call(rng, _names_before(prog, i)))
    return prog.replace_statements(prog.statements[:i] + (st,) + prog.statements[i + 1:])


def _leaf_paths(e: Expr, path=()) -> list[tuple]:
    if isinstance(e, Call):
        return [p for k, a in enumerate(e.args) for p in _leaf_paths(a, path + (k,))]
    return [path]


def _replace_at(e: Expr, path: tuple, new: Expr) -> Expr:
    if not path:
        return new
    args = list(e.args)
    args[path[0]] = _replace_at(args[path[0]], path[1:], new)
    return Call(e.fn, tuple(args))


def _get_at(e: Expr, path: tuple) -> Expr:
    for k in path:
        e = e.args[k]
    return e


def modify_argument(prog: Program, rng: random.Random) -> Program:
    if not prog.statements:
        return insert(prog, rng)
    i = rng.randrange(len(prog.statements))
    st = prog.statements[i]
    path = rng.choice(_leaf_paths(st.expr))
    new = Statement(st.target, _replace_at(st.expr, path, _leaf(rng, _names_before(prog, i))))
    return prog.replace_statements(prog.statements[:i] + (new,) + prog.statements[i + 1:])


def perturb_constant(prog: Program, rng: random.Random) -> Program:
    spots = [(i, p) for i, st in enumerate(prog.statements) for p in _leaf_paths(st.expr)
             if isinstance(_get_at(st.expr, p), Const)]
    if not spots:
        return modify_argument(prog, rng)
    i, path = rng.choice(spots)
    old = _get_at(prog.statements[i].expr, path).value
    value = _const(rng) if rng.random() < 0.5 else old * 2.0 ** rng.gauss(0.0, 1.0)
    if not math.isfinite(float(f"{value:.4g}")):  # no constant the parser would reject
        value = _const(rng)
    st = prog.statements[i]
    new = Statement(st.target, _replace_at(st.expr, path, Const(float(f"{value:.4g}"))))
    return prog.replace_statements(prog.statements[:i] + (new,) + prog.statements[i + 1:])


_OPS = {"insert": insert, "delete": delete, "modify_statement": modify_statement,
        "modify_argument": modify_argument, "perturb_constant": perturb_constant}


def mutate(prog: Program, rng: random.Random, kinds=MUTATIONS) -> Program:
    """One random mutation of ``prog`` (may be invalid; see :func:`valid_child`)."""
    return _OPS[rng.choice(kinds)](prog, rng)


def valid_child(parent: Program, rng: random.Random, kinds=MUTATIONS,
                max_tries: int = MAX_TRIES) -> tuple[Program, Program, int]:
    """Mutate ``parent`` until abstract execution accepts the child. Returns the raw child,
    its pruned form and the number of rejected tries; raises InvalidProgram after
    ``max_tries`` rejections."""
    for tries in range(max_tries):
        child = mutate(parent, rng, kinds)
        try:
            return child, check(child), tries
        except InvalidProgram:
            continue
    raise InvalidProgram(f"no valid child of the parent in {max_tries} mutations")


def random_program(rng: random.Random, states=("m", "v"), length: int = 6,
                   max_tries: int = 1000) -> Program:
    """A random valid program of ``length`` inserted statements over ``w, g, <states>, lr``."""
    params = ("w", "g") + tuple(states) + ("lr",)
    for _ in range(max_tries):
        prog = Program(params, ())
        for _ in range(length):
            prog = insert(prog, rng)
        try:
            check(prog)
            return prog
        except InvalidProgram:
            continue
    raise InvalidProgram(f"no valid random program in {max_tries} tries")
