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


def _interrupt_after(n, calls):
    def objective(lr):
        if len(calls) == n:
            raise KeyboardInterrupt
        calls.append(lr)
        return (math.log10(lr) + 2.5) ** 2
    return objective


def test_resume_after_interrupt_never_repeats_a_tried_lr(tmp_path, capfd):
    url = f"sqlite:///{tmp_path}/r.db"
    first = []
    with pytest.raises(KeyboardInterrupt):
        tune_lr(_interrupt_after(3, first), study_name="r", storage=open_storage(url), trials=8,
                default_lr=1e-3, seed=0)
    assert "Traceback" not in capfd.readouterr().err  # Optuna's failed-trial log is silenced
    second = []
    tune_lr(_bowl(second), study_name="r", storage=open_storage(url), trials=8,
            default_lr=1e-3, seed=0, resume=True)
    assert len(first) == 3 and len(second) == 5
    assert not set(first) & set(second)
    study = optuna.load_study(study_name="r", storage=url)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 8 and states.count("FAIL") == 1  # the interrupted one


def test_resume_marks_stale_running_trials_failed(tmp_path):
    url = f"sqlite:///{tmp_path}/k.db"
    study = optuna.create_study(study_name="k", storage=url)
    killed = study.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)})
    calls = []
    tune_lr(_bowl(calls), study_name="k", storage=open_storage(url), trials=3, default_lr=1e-3,
            seed=0, resume=True)
    trials = optuna.load_study(study_name="k", storage=url).trials
    assert trials[killed.number].state == optuna.trial.TrialState.FAIL
    assert killed.params["lr"] not in calls and len(calls) == 3
    assert sum(t.state.name == "RUNNING" for t in trials) == 0


def test_a_repeated_suggestion_is_pruned_not_run(tmp_path):
    url = f"sqlite:///{tmp_path}/p.db"
    seen = []
    tune_lr(_bowl(seen), study_name="p", storage=open_storage(url), trials=2, default_lr=1e-3,
            seed=0)
    optuna.load_study(study_name="p", storage=url).enqueue_trial({"lr": seen[0]})  # a repeat
    calls = []
    tune_lr(_bowl(calls), study_name="p", storage=open_storage(url), trials=3, default_lr=1e-3,
            seed=0)
    assert len(calls) == 1 and calls[0] not in seen
    states = [t.state.name for t in optuna.load_study(study_name="p", storage=url).trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]


@pytest.mark.parametrize("url,match", [
    ("notaurl", "expected an Optuna storage URL"),
    ("foo://x", "not a database URL SQLAlchemy knows"),
])
def test_storage_url_checked_without_connecting(url, match):
    from metaopt.bench.tune import check_storage_url

    with pytest.raises(ValueError, match=match):
        check_storage_url(url)


def test_missing_postgresql_driver_names_psycopg2():
    from metaopt.bench.tune import check_storage_url

    try:
        import psycopg  # noqa: F401
        pytest.skip("psycopg is installed")
    except ImportError:
        pass
    with pytest.raises(ValueError) as e:
        check_storage_url("postgresql://user@localhost/db")
    assert "psycopg2" in str(e.value) and "not installed" in str(e.value)
    assert "\n" not in str(e.value)
