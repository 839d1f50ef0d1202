"""Automatic simplification and funnel selection (Chen et al. 2023, Sec. 2.3 and 3).

Simplification: remove dead code, then repeatedly drop the statement whose removal hurts
fitness least, as long as the loss grows by at most a relative tolerance (all single-statement
deletions of a round are trained together, batched).

Funnel: re-evaluate the best programs on a larger/longer task; only those that beat the tuned
baseline there advance (the paper's proxy -> 10x -> 100x funnel against AdamW).
"""
from __future__ import annotations

import math

from .backends import evaluate_local
from .check import InvalidProgram, check
from .fitness import FitnessConfig
from .program import Call, Const, Expr, Program, Statement, Var, expr_calls, expr_vars


def size(prog: Program) -> tuple[int, int]:
    """(function calls, statements): what simplification makes smaller, calls first."""
    return sum(len(expr_calls(st.expr)) for st in prog.statements), len(prog.statements)


def simplify(prog: Program, task, cfg: FitnessConfig, tol: float = 0.01,
             evaluator: str = "batched") -> tuple[Program, float]:
    """Greedy simplification: each round tries every single deletion and every bypass (a
    statement replaced by one of its arguments) and keeps the smallest, fittest candidate
    whose fitness stays within ``(1 + tol)`` of the original's. Returns
    ``(program, fitness)``."""
    best = check(prog)
    best_fit = evaluate_local([best], task, cfg, evaluator)[0].value
    bound = best_fit * (1 + tol) if best_fit >= 0 else best_fit * (1 - tol)
    while best.statements:
        candidates = {}
        for cand in _smaller(best):
            try:
                c = check(cand)
            except InvalidProgram:
                continue
            if size(c) < size(best):
                candidates[c.to_text()] = c
        if not candidates:
            break
        progs = list(candidates.values())
        fits = [f.value for f in evaluate_local(progs, task, cfg, evaluator)]
        i = min(range(len(fits)), key=lambda k: (size(progs[k]), fits[k]) if
                math.isfinite(fits[k]) and fits[k] <= bound else ((math.inf, 0), 0))
        if not (math.isfinite(fits[i]) and fits[i] <= bound):
            break
        best, best_fit = progs[i], fits[i]
    return best, best_fit


def _smaller(prog: Program):
    """Every single-statement deletion and bypass of ``prog``."""
    sts = prog.statements
    for i, st in enumerate(sts):
        yield prog.replace_statements(sts[:i] + sts[i + 1:])
        if isinstance(st.expr, Var):
            inlined = _inline(prog, i, st.expr)
            if inlined is not None:
                yield inlined
        if isinstance(st.expr, Call):
            for arg in st.expr.args:
                if not isinstance(arg, Const):
                    yield prog.replace_statements(sts[:i] + (Statement(st.target, arg),) + sts[i + 1:])
                    inlined = _inline(prog, i, arg)
                    if inlined is not None:
                        yield inlined


def _inline(prog: Program, i: int, value: Expr) -> Program | None:
    """Drop statement ``i`` and read ``value`` wherever its target was read, or None when a
    name in ``value`` (or the target) is reassigned before a later read, or the target is an
    output whose last assignment this is."""
    sts, target = prog.statements, prog.statements[i].target
    reads = set(expr_vars(value))
    out = list(sts[:i])
    for j in range(i + 1, len(sts)):
        st = sts[j]
        if target in expr_vars(st.expr):
            st = Statement(st.target, _substitute(st.expr, target, value))
        out.append(st)
        if st.target == target:
            return prog.replace_statements(out + list(sts[j + 1:]))
        if st.target in reads and any(target in expr_vars(s.expr) for s in sts[j + 1:]):
            return None
    if target == prog.update or target in prog.states:
        return None
    return prog.replace_statements(out)


def _substitute(e: Expr, name: str, value: Expr) -> Expr:
    if isinstance(e, Var):
        return value if e.name == name else e
    if isinstance(e, Call):
        return Call(e.fn, tuple(_substitute(a, name, value) for a in e.args))
    return e


def funnel(programs: list[Program], baseline: Program, task, cfg: FitnessConfig,
           evaluator: str = "batched") -> tuple[list[tuple[Program, float, bool]], float]:
    """Evaluate ``programs`` and the ``baseline`` (its lr tuned on the same grid) on ``task``.
    Returns ``([(program, fitness, beats_baseline)] best first, baseline_fitness)``."""
    fits = evaluate_local([check(p) for p in programs] + [check(baseline)], task, cfg, evaluator)
    base = fits[-1].value
    out = [(p, f.value, f.value < base) for p, f in zip(programs, fits[:-1])]
    return sorted(out, key=lambda x: x[1]), base
