"""bilevel.f2sa_constants: F2SA's constants tuned by TPE, scored at the exact inner solution."""
import math

import optuna
import pytest

from bilevel import problems
from bilevel.f2sa_constants import (DIVERGED, DEFAULTS, F2SAConstants, constants_of, final_value,
                                    score, tune_f2sa)
from bilevel.tuning import run_f2sa

STEPS = 30  # a fixed number of outer steps makes every score deterministic


def ridge(seed):
    return problems.get("ridge", n_features=8, n_train=40, n_val=40, seed=seed)


def test_constants_round_trip_through_json_and_reject_unknown_fields():
    c = F2SAConstants(gamma0=0.03, lam0=200.0, beta0=0.02, k0=7.0, inner_steps=3, batch_size=128, momentum=True)
    assert F2SAConstants.from_json(c.to_json()) == c
    assert c.schedule().at(0)["lam"] == 200.0 and c.schedule().inner_steps == 3
    with pytest.raises(ValueError, match="unknown field.*'lr'"):
        F2SAConstants.from_json('{"lr": 0.1}')


def test_a_trial_suggests_every_constant_in_the_box():
    values = {"gamma0": 0.2, "lam0": 50.0, "beta0": 0.01, "k0": 3.0, "inner_steps": 5, "batch_size": 32,
              "momentum": True}
    assert constants_of(optuna.trial.FixedTrial(values)) == F2SAConstants(**values)


def test_final_value_is_the_exact_validation_loss_of_f2sas_last_hyperparameters():
    problem = ridge(0)
    c = F2SAConstants(inner_steps=4, batch_size=32)
    trace = run_f2sa(ridge(0), 60.0, 0, batch_size=32, schedule=c.schedule(), max_steps=STEPS)
    expected = problem.value(trace.hparams[-1])
    assert final_value(problem, c, 0, budget_s=60.0, max_steps=STEPS) == pytest.approx(expected, rel=1e-12)


def test_score_is_the_geometric_mean_over_seeds():
    c = F2SAConstants(inner_steps=4)
    each = [final_value(ridge(s), c, s, budget_s=60.0, max_steps=STEPS) for s in (3, 4)]
    assert score(ridge, c, (3, 4), budget_s=60.0, max_steps=STEPS) == pytest.approx(math.sqrt(each[0] * each[1]))


def test_a_diverging_run_scores_the_cap_instead_of_raising():
    wild = F2SAConstants(gamma0=100.0, inner_steps=20)  # z steps far past 2 / L
    assert final_value(ridge(0), wild, 0, budget_s=60.0, max_steps=STEPS) == DIVERGED


def test_tuning_starts_at_the_defaults_improves_on_them_and_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    seen = []
    best, study = tune_f2sa(ridge, seeds=(0,), trials=8, budget_s=60.0, max_steps=15, storage=storage,
                            on_trial=lambda n, c, v: seen.append((n, c, v)))
    assert seen[0][1] == DEFAULTS and len(seen) == 8
    assert study.best_value < 0.9 * seen[0][2]
    assert score(ridge, best, (0,), budget_s=60.0, max_steps=15) == pytest.approx(study.best_value, rel=1e-12)
    more = []
    _, again = tune_f2sa(ridge, seeds=(0,), trials=9, budget_s=60.0, max_steps=15, storage=storage,
                         on_trial=lambda n, c, v: more.append(n))
    assert more == [8] and len(again.trials) == 9


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="need trials >= 1"):
        tune_f2sa(ridge, seeds=(), trials=3, budget_s=1.0)
