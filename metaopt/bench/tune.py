"""Learning-rate tuning with Optuna: the same trial budget for every rule.

Each (task, rule) pair gets one study that minimises the final validation loss of a run on a
tuning seed, over a log-uniform learning-rate range around the rule's default
(``default * [lo, hi]``, by default ``[1e-2, 1e2]``), sampled by a seeded TPE sampler whose
first half of the budget is random exploration (Bergstra et al., "Algorithms for Hyper-Parameter Optimization", NeurIPS 2011; Akiba et al.,
"Optuna", KDD 2019). Studies live in an Optuna RDB storage: a SQLite file by default, or any
storage URL (e.g. PostgreSQL) so several machines can share one study. A study that already has
completed trials (a resumed or shared run) only runs the trials still missing from the budget,
never one of the learning rates it already tried.

Optuna is imported inside these functions only, so the rest of the harness runs without it.
"""
from __future__ import annotations

import math
from typing import Any, Callable


#: pip packages that provide a database driver, by the module SQLAlchemy failed to import
DRIVER_PACKAGES = {"psycopg": "psycopg2-binary (then use postgresql+psycopg2://...) or psycopg",
                   "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient",
                   "pymysql": "pymysql"}


def check_storage_url(url: str) -> None:
    """A one-line ``ValueError`` unless ``url`` is a storage URL whose database driver is
    installed. Connects to nothing and creates nothing."""
    example = "sqlite:///path/optuna.sqlite3 or postgresql+psycopg2://user@host/db"
    if "://" not in url:
        raise ValueError(f"invalid storage {url!r}: expected an Optuna storage URL such as "
                         f"{example}")
    try:
        import sqlalchemy.exc
        from sqlalchemy.engine import make_url
    except ImportError:
        raise ValueError("learning-rate tuning needs optuna (pip install optuna); "
                         "or run without tuning (--tune-trials 0)") from None
    try:
        dialect = make_url(url).get_dialect()
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError):
        raise ValueError(f"invalid storage {url!r}: not a database URL SQLAlchemy knows; use "
                         f"{example}") from None
    load = getattr(dialect, "import_dbapi", None) or dialect.dbapi
    try:
        load()
    except ImportError as e:
        name = getattr(e, "name", None) or str(e)
        package = DRIVER_PACKAGES.get(name, name)
        raise ValueError(f"storage {url!r}: its database driver {name!r} is not installed; "
                         f"pip install {package}") from None


def open_storage(url: str, **rdb_options: Any) -> Any:
    """An Optuna RDB storage for ``url`` (``rdb_options`` go to ``RDBStorage``, e.g.
    heartbeats); a malformed or unreachable URL, or a missing driver, is a one-line
    ValueError."""
    check_storage_url(url)
    import optuna
    import sqlalchemy.exc

    try:
        return optuna.storages.RDBStorage(url, **rdb_options)
    except (ImportError, sqlalchemy.exc.SQLAlchemyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot open storage {url!r}: {first}") from None


def startup_trials(trials: int) -> int:
    """Random (seeded) trials before TPE models the results: half the budget, at least one.

    Optuna's default (10) would leave a budget of 10 pure random search."""
    return max(1, trials // 2)


def completed_trials(storage: Any, study_name: str) -> int:
    """How many trials of ``study_name`` in ``storage`` are complete (0 for no such study)."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return 0
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def fail_stale_trials(study) -> int:
    """Mark the study's ``RUNNING`` trials failed: they belong to a process that was killed
    (call only when no other process works on the study). Returns how many there were."""
    import optuna

    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in running:
        study._storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)
    return len(running)


def tune_lr(
    objective: Callable[[float], float],
    *,
    study_name: str,
    storage: Any,
    trials: int,
    default_lr: float,
    lr_range: tuple[float, float] = (1e-2, 1e2),
    seed: int = 0,
    on_trial: Callable[[], None] | None = None,
    resume: bool = False,
) -> float:
    """Tune the learning rate: ``trials`` completed TPE trials of ``objective(lr)``.

    ``objective`` returns the loss to minimise (``inf`` for a diverged run, recorded as such).
    Returns the best learning rate over the study's completed trials. ``on_trial`` is called
    after each completed trial.

    Continuing a study (``resume``, or a shared storage): with ``resume`` its ``RUNNING``
    trials are stale (a killed run) and marked failed first; the sampler is seeded with
    ``seed`` and the number of trials the study already has, so it does not replay the
    learning rates of the first session; and a learning rate the study has already tried in
    any state is never run again (that trial is pruned and another one drawn).
    """
    import optuna

    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not (default_lr > 0 and 0 < lr_range[0] < lr_range[1]):
        raise ValueError(f"need default_lr > 0 and 0 < lo < hi, got {default_lr}, {lr_range}")
    # ERROR: Optuna logs a trial stopped by Ctrl-C as a warning with a traceback
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=study_name, storage=storage, direction="minimize",
                                load_if_exists=True)
    if resume:
        fail_stale_trials(study)
    earlier = study.get_trials(deepcopy=False)
    study.sampler = optuna.samplers.TPESampler(
        seed=seed if not earlier else seed + 7919 * len(earlier),
        n_startup_trials=startup_trials(trials))
    complete = (optuna.trial.TrialState.COMPLETE,)
    missing = trials - len(study.get_trials(deepcopy=False, states=complete))
    if missing > 0:
        lo, hi = default_lr * lr_range[0], default_lr * lr_range[1]
        tried = {t.params["lr"] for t in earlier if "lr" in t.params}

        def run_trial(trial):
            lr = trial.suggest_float("lr", lo, hi, log=True)
            if lr in tried:
                raise optuna.TrialPruned()
            tried.add(lr)
            value = objective(lr)
            return value if math.isfinite(value) else math.inf

        callbacks = [optuna.study.MaxTrialsCallback(trials, states=complete)]
        if on_trial is not None:
            callbacks.append(lambda study, trial: on_trial()
                             if trial.state == optuna.trial.TrialState.COMPLETE else None)
        study.optimize(run_trial, n_trials=missing + 20, callbacks=callbacks)
    return float(study.best_params["lr"])
