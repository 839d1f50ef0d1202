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


def depends_on_lr(prog: Program, steps: int = 3, seed: int = 0) -> bool:
    """Whether the update changes with ``lr``: the program runs ``steps`` steps from the same
    random ``w``, ``g`` (float64) at two learning rates; identical updates at every step mean
    the learning rate does not act (such a program is not a rule one can tune)."""
    import torch

    from .interpret import step

    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(16, generator=gen, dtype=torch.float64)
    grads = [torch.randn(16, generator=gen, dtype=torch.float64) for _ in range(steps)]
    runs = []
    for lr in (1e-3, 0.37):
        state = {s: torch.zeros_like(w) for s in prog.states}
        ups = []
        for k, g in enumerate(grads):
            try:
                u, state = step(prog, w, g, state, lr, k + 1)
            except (RuntimeError, ValueError, ArithmeticError):
                return True  # cannot tell; the fitness decides
            ups.append(u)
        runs.append(ups)
    return not all(torch.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)
                   for a, b in zip(*runs))


def _bound(fit: float, tol: float, task) -> float:
    """The worst score a simplification may reach: ``(1 + tol)`` times the loss; on a family
    (scores are log loss ratios) ``+ log(1 + tol)``."""
    from .family import Family

    if isinstance(task, Family):
        return fit + math.log1p(tol)
    return fit * (1 + tol) if fit >= 0 else fit * (1 - tol)


def simplify(prog: Program, task, cfg: FitnessConfig, tol: float = 0.01,
             evaluator: str = "batched", heldout=None,
             heldout_checks: int = 3) -> tuple[Program, float]:
    """Greedy simplification: each round tries every single deletion and every bypass (a
    statement replaced by one of its arguments) and keeps the smallest, fittest candidate
    whose fitness stays within ``tol`` of the original's (relative loss), whose update still
    depends on ``lr`` (:func:`depends_on_lr`) and, with a ``heldout`` family, whose held-out
    score stays within ``tol`` of the original's too (up to ``heldout_checks`` candidates per
    round are tried there). Returns ``(program, fitness)``."""
    best = check(prog)
    best_fit = evaluate_local([best], task, cfg, evaluator)[0].value
    bound = _bound(best_fit, tol, task)
    held_bound = None
    if heldout is not None:
        held_bound = _bound(evaluate_local([best], heldout, cfg, evaluator)[0].value, tol, heldout)
    while best.statements:
        candidates = {}
        for cand in _smaller(best):
            try:
                c = check(cand)
            except InvalidProgram:
                continue
            if size(c) < size(best) and depends_on_lr(c):
                candidates[c.to_text()] = c
        if not candidates:
            break
        progs = list(candidates.values())
        fits = [f.value for f in evaluate_local(progs, task, cfg, evaluator)]
        ok = sorted((k for k in range(len(progs)) if math.isfinite(fits[k]) and fits[k] <= bound),
                    key=lambda k: (size(progs[k]), fits[k], progs[k].to_text()))
        if held_bound is not None:
            tried = ok[:heldout_checks]  # scored together (one batched run)
            held = evaluate_local([progs[k] for k in tried], heldout, cfg, evaluator)
            ok = [k for k, f in zip(tried, held) if f.value <= held_bound][:1]
        if not ok:
            break
        best, best_fit = progs[ok[0]], fits[ok[0]]
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


def funnel_stages(programs: list[Program], stages: list, cfg: FitnessConfig,
                  evaluator: str = "batched") -> list[dict]:
    """The funnel at growing scale (Chen et al. 2023, Sec. 3): ``programs`` are scored on each
    stage (a :class:`search.family.Family`, normalised against tuned AdamW, so < 0 beats it)
    in turn; only those that beat tuned AdamW go on to the next stage. Returns one dict per
    stage reached: ``{"stage", "programs": [{"text", "score", "task_scores", "advances"}]}``
    best first (ties by text)."""
    out, alive = [], [check(p) for p in programs]
    for stage in stages:
        if not alive:
            break
        stage.prepare(cfg, evaluator)
        fits = evaluate_local(alive, stage, cfg, evaluator)
        rows = sorted(({"text": p.to_text(), "score": f.value, "task_scores": f.task_scores,
                        "advances": f.value < 0} for p, f in zip(alive, fits)),
                      key=lambda r: (r["score"], r["text"]))
        out.append({"stage": stage.name, "labels": stage.labels(), "programs": rows})
        alive = [p for p, f in zip(alive, fits) if f.value < 0]
    return out
