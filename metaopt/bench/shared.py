"""Benchmark sweeps shared by many workers (processes or machines) through one Optuna storage.

Every worker runs the same ``metaopt bench ... --storage URL --shared`` command (each with its
own ``--out``). The storage is the single source of truth and Optuna's own trial states are
the work queue; there is no coordinator process:

* **Tuning** (one study per task x optimizer): the first ``startup`` learning rates are a fixed,
  seeded log-uniform sequence *enqueued* once (by the worker that wins the study's creation
  lock); a worker claims a queued trial by its atomic ``WAITING -> RUNNING`` transition
  (:meth:`optuna.storages.BaseStorage.set_trial_state_values` refuses a second claimant), so no
  value is run twice. Later trials are TPE proposals with ``constant_liar=True`` (running
  trials count as bad, so concurrent workers spread out) and a sampler seed distinct per
  worker; a worker stops asking once the study holds ``trials`` trials (a race past the budget
  is told ``FAIL`` with the user attribute ``over_budget`` and never counted).
* **Seed runs** (the reported runs at the tuned lr): once every tuning trial is finished, one
  worker enqueues one trial per seed in a second study; workers claim them as above, so each
  seed run is done by exactly one worker, and store its curve record in the trial's user
  attributes.
* **Merging**: every record lives in the storage, so each worker (and ``metaopt report``)
  renders the same merged table from it.

A worker that dies leaves its claimed trial ``RUNNING``; the storage's heartbeat (``RDBStorage``
/ ``JournalStorage`` with ``heartbeat_interval``) lets the others fail it after
``grace_period`` seconds and put its work back in the queue, so a crash costs one run.

Storages: any Optuna RDB URL (``sqlite:///file``, ``postgresql://...``) or ``journal:///path``,
a journal file on a shared file system (no database server needed).
"""
from __future__ import annotations

import contextlib
import json
import math
import threading
import time
import warnings
from typing import Any, Callable

import numpy as np

#: seconds between heartbeats of a running trial, and after which a silent one is failed
HEARTBEAT_S = 5
GRACE_S = 30
#: errors of workers that create a new RDB storage's tables at the same moment (retried)
_SCHEMA_RACE = ("already exists", "UNIQUE constraint failed", "database is locked",
                "duplicate key value")
#: poll interval while waiting for other workers' trials
POLL_S = 0.2


def open_shared_storage(url: str) -> Any:
    """An Optuna storage several processes can share, with heartbeats: ``journal:///path``
    (a journal file) or an RDB URL. A bad URL or a missing driver is a one-line ValueError."""
    import optuna

    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend

        path = url[len("journal://"):]
        if not path:
            raise ValueError(f"invalid storage {url!r}: expected journal:///path/to/file.log")
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    from .tune import open_storage

    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
        optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(3):  # workers starting together race to create the schema
            try:
                return open_storage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                    heartbeat_stale_trial_callback=retry())
            except ValueError as err:
                if not any(m in str(err) for m in _SCHEMA_RACE) or attempt == 2:
                    raise
                time.sleep(POLL_S)


def startup_lrs(n: int, lo: float, hi: float, seed: int) -> list[float]:
    """``n`` log-uniform learning rates in ``[lo, hi]`` from ``seed``: the same in every worker."""
    u = np.random.default_rng(seed).random(n)
    return [float(math.exp(math.log(lo) + x * (math.log(hi) - math.log(lo)))) for x in u]


def _study(name: str, storage: Any, sampler: Any = None):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=name, storage=storage, direction="minimize",
                               load_if_exists=True, sampler=sampler)


def _won_lock(name: str, storage: Any) -> bool:
    """True for exactly one caller per ``name``: study creation is atomic in every storage."""
    import optuna

    try:
        optuna.create_study(study_name=name + "#lock", storage=storage)
        return True
    except optuna.exceptions.DuplicatedStudyError:
        return False


def _enqueue_once(study, storage: Any, params: list[dict], marker: str) -> None:
    """Enqueue ``params`` into ``study`` once over all workers; losers wait until it is done."""
    if _won_lock(study.study_name, storage):
        for p in params:
            study.enqueue_trial(p)
        study.set_user_attr(marker, True)
        return
    while not study.user_attrs.get(marker):
        time.sleep(POLL_S)


@contextlib.contextmanager
def _claims_serialized(storage: Any):
    """Hold an exclusive file lock beside a SQLite storage while claiming: SQLite ignores the
    ``SELECT ... FOR UPDATE`` that makes Optuna's ``WAITING -> RUNNING`` transition atomic on
    PostgreSQL/MySQL, so two processes could both claim one trial. Other storages need none
    (a journal file serialises every write)."""
    import fcntl

    url = getattr(storage, "url", None) or getattr(getattr(storage, "_backend", None), "url", "")
    if not str(url).startswith("sqlite:///"):
        yield
        return
    with open(str(url)[len("sqlite:///"):] + ".claims.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _claim(study) -> Any:
    """A queued trial of ``study`` claimed by this worker (a ``FrozenTrial``), or None."""
    with _claims_serialized(study._storage):
        return _claim_unlocked(study)


def _claim_unlocked(study) -> Any:
    import optuna

    storage = study._storage
    waiting = (optuna.trial.TrialState.WAITING,)
    for trial in study.get_trials(deepcopy=False, states=waiting):
        # a first heartbeat before the claim: a worker killed right after claiming leaves a
        # trial that still goes stale (one never beaten for would stay RUNNING for ever)
        _beat_once(storage, trial._trial_id)
        try:
            if storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.RUNNING):
                return trial
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


@contextlib.contextmanager
def _heartbeat(study, trial_id: int):
    """Record heartbeats of a claimed trial while its work runs (RDB storages), so that the
    other workers can fail it and re-queue its work if this process dies."""
    storage = study._storage
    if not _beats(storage):
        yield
        return
    stop = threading.Event()

    def beat():
        while not stop.is_set():
            storage.record_heartbeat(trial_id)
            stop.wait(storage.get_heartbeat_interval())

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _param(study, trial, name: str, dist) -> float:
    """The value queued for a claimed trial, recorded as its parameter (a re-queued trial of a
    dead worker already has it)."""
    if name in trial.params:
        return trial.params[name]
    value = trial.system_attrs["fixed_params"][name]
    study._storage.set_trial_param(trial._trial_id, name, dist.to_internal_repr(value), dist)
    return value


def _beats(storage: Any) -> bool:
    """Whether ``storage`` records heartbeats (an RDB storage opened with an interval)."""
    from optuna.storages._heartbeat import BaseHeartbeat

    return isinstance(storage, BaseHeartbeat) and bool(storage.get_heartbeat_interval())


def _beat_once(storage: Any, trial_id: int) -> None:
    if _beats(storage):
        storage.record_heartbeat(trial_id)


def _fail_stale(study) -> None:
    import optuna

    optuna.storages.fail_stale_trials(study)


def _finish(study, trial_id: int, value: float, attrs: dict | None = None) -> None:
    import optuna

    storage = study._storage
    for k, v in (attrs or {}).items():
        storage.set_trial_user_attr(trial_id, k, v)
    storage.set_trial_state_values(trial_id, optuna.trial.TrialState.COMPLETE,
                                   [value if math.isfinite(value) else math.inf])


def _counted(study) -> list:
    """The trials that count against the budget: queued, running or complete (failed ones
    were either re-queued by the heartbeat's retry or are over-budget leftovers)."""
    import optuna

    states = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING,
              optuna.trial.TrialState.COMPLETE)
    return study.get_trials(deepcopy=False, states=states)


def _position(study, number: int) -> int:
    """How many counted trials come before trial ``number`` (the lower number wins a race)."""
    return sum(1 for t in _counted(study) if t.number < number)


def tune_shared(objective: Callable[[float], float], *, study_name: str, storage: Any,
                trials: int, default_lr: float, lr_range: tuple[float, float], seed: int,
                worker: int, on_trial: Callable[[], None] | None = None) -> float:
    """Run this worker's share of ``trials`` tuning trials; return the best lr once every
    worker's trials are finished (the same value in every worker)."""
    import optuna

    from .tune import startup_trials

    lo, hi = default_lr * lr_range[0], default_lr * lr_range[1]
    startup = startup_trials(trials)
    sampler = optuna.samplers.TPESampler(seed=seed + 7919 * (worker + 1), constant_liar=True,
                                         n_startup_trials=startup)
    study = _study(study_name, storage, sampler)
    _enqueue_once(study, storage, [{"lr": v} for v in startup_lrs(startup, lo, hi, seed)],
                  "queued")
    dist = optuna.distributions.FloatDistribution(lo, hi, log=True)
    while True:
        _fail_stale(study)
        queued = _claim(study)
        if queued is not None:
            lr = _param(study, queued, "lr", dist)
            with _heartbeat(study, queued._trial_id):
                loss = objective(lr)
            _finish(study, queued._trial_id, loss)
        elif len(_counted(study)) < trials:
            trial = study.ask({"lr": dist})
            _beat_once(storage, trial._trial_id)
            if _position(study, trial.number) >= trials:  # another worker took the last one
                storage.set_trial_user_attr(trial._trial_id, "over_budget", True)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            with _heartbeat(study, trial._trial_id):
                loss = objective(trial.params["lr"])
            study.tell(trial, loss if math.isfinite(loss) else math.inf)
        elif _busy(study):  # other workers' trials still running (or re-queued if they died)
            time.sleep(POLL_S)
            continue
        else:
            break
        if on_trial is not None:
            on_trial()
    return float(study.best_params["lr"])


def _busy(study) -> bool:
    """Whether some trial of ``study`` is still queued or running."""
    import optuna

    busy = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)
    return bool(study.get_trials(deepcopy=False, states=busy))


def run_seeds_shared(run: Callable[[int], dict], *, study_name: str, storage: Any,
                     seeds: list[int], value: Callable[[dict], float],
                     on_run: Callable[[dict], None] | None = None) -> None:
    """Do the seed runs of ``seeds`` that no other worker has claimed: ``run(seed)`` returns a
    record, stored in the trial (``user_attrs["record"]``) and handed to ``on_run``."""
    import optuna

    study = _study(study_name, storage)
    _enqueue_once(study, storage, [{"seed": s} for s in seeds], "queued")
    seed_dist = optuna.distributions.IntDistribution(min(seeds), max(seeds))
    while True:
        _fail_stale(study)
        trial = _claim(study)
        if trial is None:
            if not _busy(study):
                break
            time.sleep(POLL_S)  # wait for the others' runs (re-queued if their worker died)
            continue
        seed = int(_param(study, trial, "seed", seed_dist))
        with _heartbeat(study, trial._trial_id):
            record = run(seed)
        _finish(study, trial._trial_id, value(record), {"record": json.dumps(record)})
        if on_run is not None:
            on_run(record)


def shared_records(storage: Any, study_names: list[str]) -> list[dict]:
    """Every finished seed-run record in the named run studies (the merged results)."""
    import optuna

    records = []
    for name in study_names:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            continue
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            records.append(json.loads(t.user_attrs["record"]))
    return records
