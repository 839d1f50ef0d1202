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


SCALED_SGD = """def train(w, g, lr):
    u = g * 0.1
    update = u * lr
    return update
"""


def test_depends_on_lr_separates_rules_from_lr_free_updates():
    from search.simplify import depends_on_lr

    assert depends_on_lr(parse(SGD))
    assert depends_on_lr(parse(BLOATED))
    assert not depends_on_lr(parse("def train(w, g, lr):\n    update = g * 0.1\n    return update\n"))
    # lr only reaches a state that the update never reads
    assert not depends_on_lr(parse("def train(w, g, m, lr):\n    m = m + lr\n    update = sign(g)\n"
                                   "    return update, m\n"))
    # lr that cancels out: (g * lr) / lr
    assert not depends_on_lr(parse("def train(w, g, lr):\n    a = g * lr\n    update = a / lr\n"
                                   "    return update\n"))


def test_simplify_never_drops_the_learning_rate(task):
    """With a grid of tiny lrs the lr-free bypass ``update = u`` trains far better, so a
    simplifier that only watched fitness would take it; the result must keep ``* lr``."""
    from search.simplify import depends_on_lr

    cfg = FitnessConfig(steps=20, lrs=(1e-6,))
    lr_free = parse("def train(w, g, lr):\n    u = g * 0.1\n    update = u\n    return update\n")
    fits = evaluate_local([parse(SCALED_SGD), lr_free], task, cfg)
    assert fits[1].value < 0.5 * fits[0].value  # the bypass would win on fitness
    simple, fit = simplify(parse(SCALED_SGD), task, cfg, tol=0.05)
    assert depends_on_lr(simple) and "lr" in simple.to_text()
    assert fit <= fits[0].value * 1.05


def test_simplify_keeps_the_heldout_score_within_tolerance():
    from search.family import Family

    cfg = FitnessConfig(steps=8, lrs=(0.01, 0.1))
    proxy = Family.build([("logreg_digits", {"batch_size": 16}, 8)])
    held = Family.build([("mlp_digits", {"width": 8, "depth": 1, "batch_size": 16}, 12)])
    prog = parse(ADAMW)
    simple, _ = simplify(prog, proxy, cfg, tol=0.02, heldout=held)
    base = held.evaluate([prog], cfg)[0].value
    assert held.evaluate([simple], cfg)[0].value <= base + math.log1p(0.02) + 1e-9
