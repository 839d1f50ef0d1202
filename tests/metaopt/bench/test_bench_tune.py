"""Optuna learning-rate tuning: equal budgets, seeded, resumable, any storage URL."""
import math

import pytest

optuna = pytest.importorskip("optuna")

from metaopt.bench.tune import open_storage, tune_lr  # noqa: E402


def _bowl(calls, best=3e-3):
    def objective(lr):
        calls.append(lr)
        return (math.log10(lr) - math.log10(best)) ** 2
    return objective


def test_budget_range_and_resume(tmp_path):
    url = f"sqlite:///{tmp_path}/s.sqlite3"
    calls = []
    lr = tune_lr(_bowl(calls), study_name="s", storage=open_storage(url), trials=12,
                 default_lr=1e-3, seed=0)
    assert len(calls) == 12
    assert all(1e-5 <= c <= 1e-1 for c in calls)  # default * [1e-2, 1e2]
    assert lr == min(calls, key=lambda c: abs(math.log10(c) - math.log10(3e-3)))
    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.trials) == 12 and study.best_params["lr"] == lr
    # a resumed study with its budget spent runs nothing and returns the same answer
    again = []
    assert tune_lr(_bowl(again), study_name="s", storage=open_storage(url), trials=12,
                   default_lr=1e-3, seed=0) == lr
    assert again == []
    # a larger budget runs only the missing trials
    tune_lr(_bowl(again), study_name="s", storage=open_storage(url), trials=15,
            default_lr=1e-3, seed=0)
    assert len(again) == 3


def test_seeded_sampler_repeats(tmp_path):
    runs = []
    for i in range(2):
        calls = []
        tune_lr(_bowl(calls), study_name="s", storage=open_storage(f"sqlite:///{tmp_path}/{i}.db"),
                trials=6, default_lr=1e-3, seed=7)
        runs.append(calls)
    assert runs[0] == runs[1]


def test_diverged_trials_count_as_inf(tmp_path):
    lr = tune_lr(lambda lr: math.inf if lr > 1e-3 else -lr, study_name="d",
                 storage=open_storage(f"sqlite:///{tmp_path}/d.db"), trials=8,
                 default_lr=1e-3, seed=0)
    assert lr <= 1e-3


@pytest.mark.parametrize("url,match", [
    ("optuna.db", "expected an Optuna storage URL"),
    ("sqlite:////no/such/dir/x.db", "cannot open storage"),
])
def test_bad_storage_is_one_line_value_error(url, match):
    with pytest.raises(ValueError, match=match) as e:
        open_storage(url)
    assert "\n" not in str(e.value)


def test_bad_budget_or_range(tmp_path):
    st = open_storage(f"sqlite:///{tmp_path}/b.db")
    with pytest.raises(ValueError, match="trials"):
        tune_lr(lambda lr: 0.0, study_name="b", storage=st, trials=0, default_lr=1e-3)
    with pytest.raises(ValueError, match="default_lr"):
        tune_lr(lambda lr: 0.0, study_name="b", storage=st, trials=1, default_lr=1e-3,
                lr_range=(10.0, 1.0))
