"""Hyperparameter tuners on a :class:`~bilevel.problems.BilevelProblem` under a wall-clock budget.

Every tuner returns a :class:`Trace`: snapshots ``(seconds, inner_trainings, hparams, value)``
where ``seconds`` excludes bookkeeping and ``value`` is ``F(hparams)`` (validation loss at the
exact inner solution) when the method computed it anyway, else ``None`` (filled in afterwards by
:func:`evaluate_trace`, outside the clock). ``inner_trainings`` counts inner (re)trainings: one per
outer step for ``implicit`` (a warm-started inner solve) and ``unrolled`` (K steps), one per
outer step for ``f2sa`` (T inner steps on y and z), one per trial for ``optuna`` (a full solve).

* ``implicit``: K warm-started heavy-ball inner steps (or an exact solve), CG hypergradient
  (:func:`bilevel.hypergrad`), Adam on the hyperparameters.
* ``unrolled``: K steps of a zoo rule warm-started from the previous outer step, reverse-mode
  hypergradient (:func:`bilevel.unrolled_hypergrad`), Adam on the hyperparameters.
* ``f2sa``: :func:`bilevel.f2sa` with minibatches, Adam outer steps.
* ``optuna``: TPE (Bergstra et al., NeurIPS 2011) over the box ``problem.hparam_range``, each
  trial a full inner solve, the first trial the gradient methods' starting point; study stored
  in SQLite when ``storage`` is given (resumes when the file exists).

Each runner stops after ``max_steps`` outer steps / trials, or before a step that would end past
``budget`` seconds of real time since the runner started (bookkeeping and warm-up included; the
next step is predicted to last as long as the last one), whichever comes first (at least one step
always runs).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import Tensor

from metaopt import zoo
from metaopt.rule import apply, init_states

from .f2sa import F2SASchedule, f2sa
from .f2sa_constants import DEFAULTS
from .implicit import hypergrad
from .problems.base import BilevelProblem
from .unrolled import unrolled_hypergrad

METHODS = ("implicit", "unrolled", "f2sa", "optuna")


@dataclass
class Trace:
    method: str
    seconds: list[float] = field(default_factory=list)
    inner_trainings: list[int] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    hparams: list[Tensor] = field(default_factory=list)

    def record(self, seconds: float, trainings: int, h: Tensor, value: float | None) -> None:
        self.seconds.append(seconds)
        self.inner_trainings.append(trainings)
        self.hparams.append(h.detach().clone())
        self.values.append(value)

    def best_so_far(self) -> list[float]:
        out, best = [], math.inf
        for v in self.values:
            best = min(best, v if v is not None and math.isfinite(v) else math.inf)
            out.append(best)
        return out

    def to_json(self) -> dict:
        return {"method": self.method, "seconds": self.seconds, "inner_trainings": self.inner_trainings,
                "values": self.values}


class _Clock:
    """Wall-clock that can be paused for bookkeeping (snapshots, progress bars): ``spent`` is the
    method's own time. Creating one first runs every torch.func transform once, so their
    one-time lazy imports (seconds) are not charged to whichever method happens to run first;
    :meth:`out_of` judges the budget on real time since ``born`` (the runner's start)."""

    def __init__(self, born: float | None = None):
        self.born = time.perf_counter() if born is None else born
        _warm_up()
        self.spent, self._start, self._running = 0.0, time.perf_counter(), True
        self._last_check, self._step = None, 0.0

    def pause(self) -> float:
        if self._running:
            self.spent += time.perf_counter() - self._start
            self._running = False
        return self.spent

    def resume(self) -> None:
        self._start, self._running = time.perf_counter(), True

    def out_of(self, budget: float) -> bool:
        """Pause, and say whether one more step (as long as the last) would end past ``budget``
        seconds of real time since ``born``."""
        self.pause()
        now = time.perf_counter()
        if self._last_check is not None:
            self._step = now - self._last_check
        self._last_check = now
        return now - self.born + self._step > budget


def _warm_up() -> None:
    x = torch.ones(2)
    _, pullback = torch.func.vjp(torch.func.grad(lambda v: (v**3).sum()), x)
    torch.func.vmap(pullback)(torch.eye(2))


def _adam_outer(lr: float):
    rule = zoo.rule("adam", lr=lr)
    state = {"s": None, "k": 0}

    def step(h: Tensor, g: Tensor) -> Tensor:
        if state["s"] is None:
            state["s"] = init_states(rule, [h])[0]
        state["k"] += 1
        (h2,), (state["s"],) = apply(rule, [h], [g], [state["s"]], state["k"])
        return h2.detach()

    return step


def run_implicit(problem: BilevelProblem, budget: float, seed: int, *, lr: float = 0.1, cg_iters: int = 20,
                 inner_steps: int = 20, rule_hp: dict | None = None, max_steps: int | None = None,
                 tick: Callable | None = None) -> Trace:
    """Approximate implicit differentiation (AID-CG, Pedregosa 2016; Grazzi et al. 2020): the inner
    problem is advanced by ``inner_steps`` warm-started heavy-ball steps (no graph), or solved
    exactly by ``problem.solve`` when ``inner_steps == 0``; then a CG hypergradient."""
    born = time.perf_counter()
    trace, clock = Trace("implicit"), _Clock(born)
    h, params, step = problem.init_hparams(), problem.init_params(), _adam_outer(lr)
    rule = zoo.rule("sgd", **(rule_hp if rule_hp is not None else {"lr": 0.1, "momentum": 0.9}))
    k = 0
    while k == 0 or (not clock.out_of(budget) and k < (max_steps or math.inf)):
        clock.resume()
        params = problem.solve(h, params) if inner_steps == 0 else _advance(problem, rule, params, h, inner_steps)
        # AID with a deliberately truncated solve (Grazzi et al. 2020): a short CG is the method
        g, info = hypergrad(problem.inner_loss, problem.outer_loss, params, h, "cg", maxiter=cg_iters,
                            return_info=True, on_fail="ignore")
        exact = problem.convex and inner_steps == 0
        k += 1
        trace.record(clock.pause(), k, h, float(info.outer_value) if exact else None)
        if tick:
            tick(trace)
        clock.resume()
        h = step(h, g)
    return trace


def run_unrolled(problem: BilevelProblem, budget: float, seed: int, *, lr: float = 0.1, steps: int = 20,
                 rule: str = "sgd", rule_hp: dict | None = None, max_steps: int | None = None,
                 tick: Callable | None = None) -> Trace:
    # default inner rule: heavy ball (Adam's sqrt(v) has an infinite derivative wherever a
    # gradient coordinate is exactly zero, e.g. digits' constant pixels, so its unroll gives NaN)
    born = time.perf_counter()
    trace, clock = Trace("unrolled"), _Clock(born)
    h, params, step = problem.init_hparams(), problem.init_params(), _adam_outer(lr)
    the_rule = zoo.rule(rule, **(rule_hp if rule_hp is not None else {"lr": 0.1, "momentum": 0.9}))
    k = 0
    while k == 0 or (not clock.out_of(budget) and k < (max_steps or math.inf)):
        trace.record(clock.spent, k, h, None)
        if tick:
            tick(trace)
        clock.resume()
        g = unrolled_hypergrad(problem.inner_loss, problem.outer_loss, params, h, the_rule, steps)
        params = _advance(problem, the_rule, params, h, steps)
        h = step(h, g)
        k += 1
    trace.record(clock.pause(), k, h, None)
    return trace


def _advance(problem, rule, params, h, steps):
    """The same K inner steps without the graph: the warm start of the next outer step."""
    ps = [p.detach() for p in params]
    states = init_states(rule, ps)
    grad = torch.func.grad(lambda q: problem.inner_loss(tuple(q), h))
    with torch.no_grad():
        for i in range(steps):
            ps, states = apply(rule, ps, list(grad(tuple(ps))), states, i + 1)
    return tuple(ps)


def run_f2sa(problem: BilevelProblem, budget: float, seed: int, *, lr: float = DEFAULTS.beta0,
             batch_size: int = DEFAULTS.batch_size,
             schedule: F2SASchedule | None = None, momentum: bool = DEFAULTS.momentum,
             max_steps: int | None = None, tick: Callable | None = None) -> Trace:
    born = time.perf_counter()
    trace, clock = Trace("f2sa"), _Clock(born)
    gen = torch.Generator().manual_seed(seed)
    sched = schedule or replace(DEFAULTS, beta0=lr).schedule()

    def callback(k, x):
        trace.record(clock.pause(), k + 1, x, None)
        if tick:
            tick(trace)
        stop = clock.out_of(budget) or k + 1 >= (max_steps or math.inf)
        clock.resume()  # out_of pauses: F2SA's next steps are the method's own time
        return stop

    trace.record(0.0, 0, problem.init_hparams(), None)
    clock.resume()
    f2sa(problem.inner_loss, problem.outer_loss, problem.init_params(), problem.init_hparams(),
         outer_steps=10**9, schedule=sched, momentum=momentum, outer_rule="adam",
         sample_inner=lambda: problem.sample("train", batch_size, gen),
         sample_outer=lambda: problem.sample("val", batch_size, gen), callback=callback)
    return trace


def run_optuna(problem: BilevelProblem, budget: float, seed: int, *, storage: str | None = None,
               study_name: str | None = None, max_steps: int | None = None, tick: Callable | None = None) -> Trace:
    born = time.perf_counter()
    import optuna  # lazy: not installed on every machine

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lo, hi = problem.hparam_range
    d = problem.num_hparams
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(storage=storage, sampler=sampler, load_if_exists=True,
                                study_name=study_name or f"{problem.name}-seed{seed}")
    base = problem.init_hparams()
    if not study.trials:  # start where the gradient methods start
        study.enqueue_trial({f"h{i}": float(v) for i, v in enumerate(base.clamp(lo, hi).tolist())})
    trace, clock = Trace("optuna"), _Clock(born)  # method time starts once the study exists
    while not trace.values or (not clock.out_of(budget) and len(trace.values) < (max_steps or math.inf)):
        clock.resume()
        trial = study.ask()
        h = torch.tensor([trial.suggest_float(f"h{i}", lo, hi) for i in range(d)], dtype=base.dtype,
                         device=base.device)
        value = problem.value(h)
        study.tell(trial, value)
        trace.record(clock.pause(), len(trace.values) + 1, h, value)
        if tick:
            tick(trace)
        clock.resume()
    return trace


RUNNERS = {"implicit": run_implicit, "unrolled": run_unrolled, "f2sa": run_f2sa, "optuna": run_optuna}


def evaluate_trace(problem: BilevelProblem, trace: Trace, max_points: int = 8,
                   deadline: float | None = None) -> Trace:
    """Fill in missing ``values`` with ``F(hparams)`` at up to ``max_points`` snapshots, spaced
    geometrically in index (dense early, where time-to-target is decided; first and last always
    kept); the other snapshots are dropped. With a ``deadline`` (a ``time.perf_counter()``
    value) the snapshots between first and last are skipped once another solve (as long as the
    slowest so far) would end past it."""
    if all(v is not None for v in trace.values):
        return trace
    n = len(trace.values)
    middle = {min(n - 1, round(n ** (j / max(max_points - 2, 1)))) for j in range(max_points - 1)} - {0, n - 1}
    values, slowest = {}, 0.0
    for i in [n - 1, 0] + sorted(middle):
        if i in values:
            continue
        if i in middle and deadline is not None and time.perf_counter() + slowest > deadline:
            break
        start = time.perf_counter()
        values[i] = trace.values[i] if trace.values[i] is not None else _value(problem, trace.hparams[i])
        slowest = max(slowest, time.perf_counter() - start)
    out = Trace(trace.method)
    for i in sorted(values):
        out.record(trace.seconds[i], trace.inner_trainings[i], trace.hparams[i], values[i])
    return out


def _value(problem: BilevelProblem, h: Tensor) -> float:
    return float(problem.outer_loss(problem.solve(h), h))
