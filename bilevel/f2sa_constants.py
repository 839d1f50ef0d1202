"""Tuning F2SA's constants on a bilevel problem (Optuna TPE over the schedule, batch size and
estimator).

F2SA (:mod:`bilevel.f2sa`; Kwon et al., ICML 2023) leaves its constants to the user: the
paper's analysis fixes only the exponents of the schedules (a = 5/7, c = 4/7 under noise in both
levels), not the scales ``gamma0`` (inner step on ``z``), ``lam0`` (penalty), ``beta0`` (outer
step), ``k0`` (when the decay starts), the number ``T`` of inner steps per outer step, the
minibatch size or whether to use the STORM momentum estimator. Their good values differ by
orders of magnitude between problems, so a comparison of F2SA with untuned constants mostly
measures the constants. This module tunes them, per problem, on seeds the comparison does not
use:

    score(c) = geomean over tuning seeds s of F_s(x_final(c, s))

where ``F_s`` is the validation loss at the exact inner solution of the problem built with seed
``s`` (a fresh data split, label corruption, ...) and ``x_final`` the hyperparameters F2SA holds
after ``budget_s`` seconds (or ``max_steps`` outer steps) with constants ``c``
(:func:`bilevel.tuning.run_f2sa`). A run that diverges scores :data:`DIVERGED`. The first trial
is :data:`DEFAULTS`, ``run_f2sa``'s own constants (the comparisons' before tuning).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Callable

from .f2sa import F2SASchedule
from .problems.base import BilevelProblem

DIVERGED = 1e3  # the score of a run whose hyperparameters or validation loss are not finite


@dataclass(frozen=True)
class F2SAConstants:
    """Everything :func:`bilevel.tuning.run_f2sa` takes besides the problem and the budget."""

    gamma0: float = 0.5
    lam0: float = 10.0
    beta0: float = 0.1
    k0: float = 1.0
    inner_steps: int = 10
    batch_size: int = 64
    momentum: bool = False

    def schedule(self) -> F2SASchedule:
        """The F2SA schedule (the paper's exponents a = 5/7, c = 4/7)."""
        return F2SASchedule(gamma0=self.gamma0, lam0=self.lam0, beta0=self.beta0, k0=self.k0,
                            inner_steps=self.inner_steps)

    def run(self, problem: BilevelProblem, budget_s: float, seed: int, max_steps: int | None = None):
        """One :func:`bilevel.tuning.run_f2sa` run with these constants (its ``Trace``)."""
        from .tuning import run_f2sa

        return run_f2sa(problem, budget_s, seed, batch_size=self.batch_size, schedule=self.schedule(),
                        momentum=self.momentum, max_steps=max_steps)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "F2SAConstants":
        data = json.loads(text)
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"F2SAConstants: unknown field(s) {unknown}; "
                             f"allowed: {sorted(cls.__dataclass_fields__)}")
        return cls(**data)


#: :func:`bilevel.tuning.run_f2sa`'s constants when it is given no schedule (not the paper's: it
#: fixes only the exponents)
DEFAULTS = F2SAConstants()

# The search box: (low, high, log scale) per float constant; choices for the discrete ones.
FLOAT_BOX = {"gamma0": (1e-3, 3.0), "lam0": (1.0, 1e3), "beta0": (1e-3, 1.0), "k0": (1.0, 100.0)}
INT_BOX = {"inner_steps": (1, 50)}
CHOICES = {"batch_size": (32, 64, 128, 256), "momentum": (False, True)}


def constants_of(trial) -> F2SAConstants:
    """The constants an Optuna trial suggests in the search box (log scale for every number)."""
    floats = {k: trial.suggest_float(k, lo, hi, log=True) for k, (lo, hi) in FLOAT_BOX.items()}
    ints = {k: trial.suggest_int(k, lo, hi, log=True) for k, (lo, hi) in INT_BOX.items()}
    picks = {k: trial.suggest_categorical(k, list(v)) for k, v in CHOICES.items()}
    return F2SAConstants(**floats, **ints, **picks)


def final_value(problem: BilevelProblem, constants: F2SAConstants, seed: int, *, budget_s: float,
                max_steps: int | None = None) -> float:
    """``F(x_final)``: the validation loss at the exact inner solution for the hyperparameters
    F2SA holds at the end of one run; :data:`DIVERGED` when that is not finite."""
    import torch

    h = constants.run(problem, budget_s, seed, max_steps).hparams[-1]
    if not bool(torch.isfinite(h).all()):
        return DIVERGED
    try:
        value = problem.value(h)
    except (RuntimeError, ValueError):  # a Newton solve that fails on extreme hyperparameters
        return DIVERGED
    return value if math.isfinite(value) else DIVERGED


def score(make_problem: Callable[[int], BilevelProblem], constants: F2SAConstants, seeds, *,
          budget_s: float, max_steps: int | None = None) -> float:
    """Geometric mean over ``seeds`` of :func:`final_value` on ``make_problem(seed)``."""
    values = [final_value(make_problem(s), constants, s, budget_s=budget_s, max_steps=max_steps)
              for s in seeds]
    return math.exp(sum(math.log(v) for v in values) / len(values))


def tune_f2sa(make_problem: Callable[[int], BilevelProblem], *, seeds, trials: int, budget_s: float,
              max_steps: int | None = None, sampler_seed: int = 0, storage: str | None = None,
              study_name: str = "f2sa", on_trial: Callable | None = None):
    """Tune F2SA's constants by multivariate TPE for ``trials`` trials in total (a study already
    in ``storage`` resumes: its finished trials count). Returns ``(best constants, study)``; the
    first trial is :data:`DEFAULTS`. ``on_trial(trial_number, constants, score)`` is called
    after each new trial."""
    import optuna

    seeds = list(seeds)
    if trials < 1 or not seeds or not budget_s > 0:
        raise ValueError(f"tune_f2sa: trials={trials}, seeds={seeds}, budget_s={budget_s}; need "
                         "trials >= 1, at least one seed and budget_s > 0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(multivariate=True, seed=sampler_seed))
    if not study.trials:
        study.enqueue_trial(asdict(DEFAULTS))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for _ in range(trials - len(done)):
        trial = study.ask()
        constants = constants_of(trial)
        value = score(make_problem, constants, seeds, budget_s=budget_s, max_steps=max_steps)
        study.tell(trial, value)
        if on_trial is not None:
            on_trial(trial.number, constants, value)
    best = study.best_trial.params
    return F2SAConstants(**best), study
