"""Fitness: the three evaluators agree, match closed forms, and bad programs score worst."""
import math

import pytest

from metaopt import tasks
from search import parse
from search.batched import fitness_batched
from search.fitness import FitnessConfig, fitness_serial, fitness_vmapped

SGD = "def train(w, g, lr):\n    update = g * lr\n    return update\n"
PROGRAMS = [
    SGD,
    "def train(w, g, m, v, lr, t):\n    m = interp(g, m, 0.9)\n    v = interp(square(g), v, 0.99)\n"
    "    update = lr * m / (1 - power(0.9, t)) / (sqrt(v / (1 - power(0.99, t))) + eps)\n    return update, m, v\n",
    "def train(w, g, m, lr):\n    m = interp(g, m, 0.9)\n    c = clip_by_global_norm(m, 0.5)\n"
    "    update = (c + dot(w, g) * w * 0.01 + cosine_sim(g, m) * g) * lr\n    return update, m\n",
    "def train(w, g, m, lr):\n    update = sign(interp(g, m, 0.9)) * lr\n    m = interp(g, m, 0.99)\n    return update, m\n",
    "def train(w, g, lr):\n    update = exp(g * 50.0) * lr\n    return update\n",  # diverges
]


@pytest.fixture(scope="module")
def task():
    return tasks.get("quadratic", dim=16, noise=0.3)


def test_sgd_fitness_matches_the_closed_form_on_a_noise_free_quadratic():
    task = tasks.get("quadratic", dim=8, cond=10.0)
    cfg = FitnessConfig(steps=7, lrs=(0.1, 0.5, 1.0))
    fit = fitness_serial(parse(SGD), task, cfg)
    h, xs = task.h.double(), task.x_star.double()
    # x_0 = 0, x_K - x* = (1 - lr h)^K (x_0 - x*)
    closed = [float(0.5 * (h * ((1 - lr * h) ** cfg.steps * xs) ** 2).sum()) for lr in cfg.lrs]
    assert fit.per_lr == pytest.approx(closed, rel=1e-4)
    assert fit.value == pytest.approx(min(closed), rel=1e-4) and fit.best_lr == 1.0


def test_serial_vmapped_and_batched_evaluators_agree(task):
    cfg = FitnessConfig(steps=12, lrs=(0.01, 0.1, 1.0), seeds=(0, 1))
    progs = [parse(t) for t in PROGRAMS]
    batched = fitness_batched(progs, task, cfg)
    for prog, b in zip(progs, batched):
        s, v = fitness_serial(prog, task, cfg), fitness_vmapped(prog, task, cfg)
        for x, y, z in zip(s.per_lr, v.per_lr, b.per_lr):
            if math.isfinite(x):
                assert y == pytest.approx(x, rel=1e-4) and z == pytest.approx(x, rel=1e-4)
            else:
                assert not math.isfinite(y) and not math.isfinite(z)
    assert batched[-1].value == math.inf and batched[-1].best_lr is None
    assert all(math.isfinite(b.value) for b in batched[:-1])


def test_batched_equals_single_step_interpreter_on_mixed_programs(task):
    cfg = FitnessConfig(steps=5, lrs=(0.05,), seeds=(3,))
    progs = [parse(t) for t in PROGRAMS[:4]]
    together = fitness_batched(progs, task, cfg)
    alone = [fitness_batched([p], task, cfg)[0] for p in progs]
    assert [a.value for a in alone] == pytest.approx([t.value for t in together], rel=1e-5)


def test_nan_exceptions_and_timeouts_score_worst_without_raising(task):
    nan = parse("def train(w, g, lr):\n    update = g * log(w - w) * lr\n    return update\n")
    for fn in (fitness_serial, fitness_vmapped):
        assert fn(nan, task, FitnessConfig(steps=3)).value == math.inf
    assert fitness_batched([nan], task, FitnessConfig(steps=3))[0].value == math.inf
    slow = FitnessConfig(steps=100_000, time_limit=0.05)
    assert fitness_serial(parse(SGD), task, slow).value == math.inf
    assert fitness_vmapped(parse(SGD), task, slow).value == math.inf
    assert fitness_batched([parse(SGD)], task, slow)[0].value == math.inf


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        FitnessConfig(steps=0)
    with pytest.raises(ValueError):
        FitnessConfig(lrs=())


def test_vmapped_validation_hook_gives_the_same_fitness(task):
    """A task's optional tensor-valued ``val_loss_fn`` (one vmapped call in the batched
    evaluator) must agree with the serial evaluator, which calls ``evaluate`` row by row."""
    from metaopt.tasks.quadratic import Quadratic

    class Hooked(Quadratic):
        def val_loss_fn(self, params):
            r = params[0] - self.x_star
            return 0.5 * (self.h * r * r).sum()

    hooked = Hooked(dim=16, noise=0.3)
    cfg = FitnessConfig(steps=8, lrs=(0.01, 0.1, 1.0), seeds=(0, 1))
    progs = [parse(t) for t in PROGRAMS]
    for prog, b in zip(progs, fitness_batched(progs, hooked, cfg)):
        s = fitness_serial(prog, hooked, cfg)
        assert b.per_lr == pytest.approx(s.per_lr, rel=1e-5)
