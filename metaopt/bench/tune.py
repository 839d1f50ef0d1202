"""Learning-rate tuning with Optuna: the same trial budget for every rule.

Each (task, rule) pair gets one study that minimises the final validation loss of a run on a
tuning seed, over a log-uniform learning-rate range around the rule's default
(``default * [lo, hi]``, by default ``[1e-2, 1e2]``), sampled by a seeded TPE sampler whose
first half of the budget is random exploration (Bergstra et al., "Algorithms for Hyper-Parameter Optimization", NeurIPS 2011; Akiba et al.,
"Optuna", KDD 2019). Studies live in an Optuna RDB storage: a SQLite file by default, or any
storage URL (e.g. PostgreSQL) so several machines can share one study. A study that already has
completed trials (a resumed or shared run) only runs the trials still missing from the budget.

Optuna is imported inside these functions only, so the rest of the harness runs without it.
"""
from __future__ import annotations

import math
from typing import Any, Callable


def open_storage(url: str, **rdb_options: Any) -> Any:
    """An Optuna RDB storage for ``url`` (``rdb_options`` go to ``RDBStorage``, e.g.
    heartbeats); a malformed or unreachable URL is a ValueError."""
    try:
        import optuna
        import sqlalchemy.exc
    except ImportError:
        raise ValueError("learning-rate tuning needs optuna (pip install optuna); "
                         "or run without tuning (--tune-trials 0)") from None

    if "://" not in url:
        raise ValueError(
            f"invalid storage {url!r}: expected an Optuna storage URL such as "
            "sqlite:///path/optuna.sqlite3 or postgresql://user@host/db"
        )
    try:
        return optuna.storages.RDBStorage(url, **rdb_options)
    except (ImportError, sqlalchemy.exc.SQLAlchemyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot open storage {url!r}: {first}") from None


def startup_trials(trials: int) -> int:
    """Random (seeded) trials before TPE models the results: half the budget, at least one.

    Optuna's default (10) would leave a budget of 10 pure random search."""
    return max(1, trials // 2)


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
) -> float:
    """Tune the learning rate: ``trials`` completed TPE trials of ``objective(lr)``.

    ``objective`` returns the loss to minimise (``inf`` for a diverged run, recorded as such).
    Returns the best learning rate over the study's completed trials.
    """
    import optuna

    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not (default_lr > 0 and 0 < lr_range[0] < lr_range[1]):
        raise ValueError(f"need default_lr > 0 and 0 < lo < hi, got {default_lr}, {lr_range}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name, storage=storage, direction="minimize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(trials)),
    )
    complete = (optuna.trial.TrialState.COMPLETE,)
    missing = trials - len(study.get_trials(deepcopy=False, states=complete))
    if missing > 0:
        lo, hi = default_lr * lr_range[0], default_lr * lr_range[1]

        def run_trial(trial):
            value = objective(trial.suggest_float("lr", lo, hi, log=True))
            return value if math.isfinite(value) else math.inf

        callbacks = [optuna.study.MaxTrialsCallback(trials, states=complete)]
        if on_trial is not None:
            callbacks.append(lambda study, trial: on_trial())
        study.optimize(run_trial, n_trials=missing, callbacks=callbacks)
    return float(study.best_params["lr"])
