"""Automatic simplification and funnel selection."""
import math

import pytest

from metaopt import tasks
from search import parse
from search.program import Var
from search.backends import evaluate_local
from search.fitness import FitnessConfig
from search.simplify import funnel, simplify
from search.warm import ADAMW

CFG = FitnessConfig(steps=30, lrs=(0.1, 0.3, 1.0, 3.0, 10.0, 30.0))
SGD = "def train(w, g, lr):\n    update = g * lr\n    return update\n"
# momentum with no-op statements (x * 1.0, + 0 * w) and a tiny-effect term: what search produces
BLOATED = """def train(w, g, m, lr):
    m = interp(g, m, 0.9)
    a = m * 1.0
    b = a + w * 0.0
    c = b + 1e-07 * sign(g)
    update = c * lr
    return update, m
"""


@pytest.fixture(scope="module")
def task():
    return tasks.get("quadratic", dim=16, cond=100.0)


def test_simplify_drops_statements_that_do_not_matter(task):
    prog = parse(BLOATED)
    simple, fit = simplify(prog, task, CFG, tol=1e-3)
    full = evaluate_local([prog], task, CFG)[0].value
    assert len(simple.statements) == 2 and len(prog.statements) == 5
    assert fit <= full * (1 + 1e-3)
    assert simple.states == ("m",)
    assert fit < evaluate_local([parse(SGD)], task, CFG)[0].value  # momentum kept: it matters


def test_simplify_never_loses_fitness_at_zero_tolerance_and_inlines_copies(task):
    prog = parse(ADAMW)
    simple, fit = simplify(prog, task, CFG, tol=0.0)
    full = evaluate_local([prog], task, CFG)[0].value
    assert fit <= full and len(simple.statements) < len(prog.statements)
    outputs = {simple.update, *simple.states}
    assert all(not isinstance(st.expr, Var) or st.target in outputs for st in simple.statements)


def test_funnel_keeps_only_programs_beating_the_baseline(task):
    longer = FitnessConfig(steps=40, lrs=CFG.lrs, seeds=(0, 1, 2))
    mom = parse(BLOATED)
    worse = parse("def train(w, g, lr):\n    update = g * lr * 0.0001\n    return update\n")
    ranked, base = funnel([worse, mom], parse(SGD), task, longer)
    assert math.isfinite(base)
    by_text = {p.to_text(): (f, ok) for p, f, ok in ranked}
    assert by_text[worse.to_text()][1] is False
    fits = [f for _, f, _ in ranked]
    assert fits == sorted(fits)
    for p, f, ok in ranked:
        assert ok == (f < base)
