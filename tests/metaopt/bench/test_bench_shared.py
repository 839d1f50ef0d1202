"""Bench sweeps shared by several worker processes through one Optuna storage
(:mod:`metaopt.bench.shared`): no tuning trial or seed run is done twice, and the merged
table equals a single worker's at equal budget."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from metaopt.bench.shared import open_shared_storage, startup_lrs

pytestmark = pytest.mark.slow

ARGS = ["--task", "quadratic", "--optimizer", "sgd,adam", "--seeds", "3", "--steps", "15",
        "--shared", "--device", "cpu"]


def bench_workers(n: int, storage: str, out, trials: int) -> list[str]:
    """Start ``n`` ``metaopt bench --shared`` processes at once; their output folders."""
    outs = [str(out / f"w{i}") for i in range(n)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "metaopt", "bench", *ARGS, "--storage",
                               storage, "--tune-trials", str(trials), "--out", o],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for o in outs]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    return outs


def records(out: str) -> list[dict]:
    path = os.path.join(out, "curves.jsonl")
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path)]


def table(out: str) -> str:
    text = open(os.path.join(out, "results.md")).read().split("Settings:")[1]
    return "\n".join(line for line in text.splitlines() if line.startswith("|"))


@pytest.mark.parametrize("backend", ["journal", "sqlite"])
def test_three_workers_split_the_work_without_repeats(tmp_path, backend):
    storage = (f"journal:///{tmp_path}/sweep.log" if backend == "journal"
               else f"sqlite:///{tmp_path}/sweep.sqlite3")
    outs = bench_workers(3, storage, tmp_path, trials=6)
    keys = [(r["task"], r["optimizer"], r["seed"]) for o in outs for r in records(o)]
    assert sorted(keys) == sorted({(t, o, s) for t in ["quadratic"] for o in ["sgd", "adam"]
                                   for s in range(3)}), "every seed run exactly once"
    import optuna

    store = open_shared_storage(storage)
    for study in optuna.get_all_study_summaries(store):
        if study.study_name.endswith("#lock") or study.study_name.endswith("/runs"):
            continue
        trials = optuna.load_study(study_name=study.study_name, storage=store).get_trials()
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        lrs = [t.params["lr"] for t in done]
        assert len(done) == 6 and len(set(lrs)) == 6, (study.study_name, lrs)
    assert table(outs[0]) == table(outs[1]) == table(outs[2]), "every worker merges all runs"


def test_merged_table_equals_a_single_worker(tmp_path):
    # one tuning trial: all of it is the enqueued seeded sequence, so the tuned lr, and with
    # it every run, is the same however many workers share the sweep
    shared = bench_workers(3, f"journal:///{tmp_path}/three.log", tmp_path / "three", trials=1)
    alone = bench_workers(1, f"journal:///{tmp_path}/one.log", tmp_path / "one", trials=1)
    merged = sorted((r for o in shared for r in records(o)),
                    key=lambda r: (r["optimizer"], r["seed"]))
    single = sorted(records(alone[0]), key=lambda r: (r["optimizer"], r["seed"]))
    strip = lambda r: {k: v for k, v in r.items() if k != "evals" and "time" not in k}
    assert [strip(r) for r in merged] == [strip(r) for r in single]
    assert table(shared[0]) == table(alone[0])


def test_startup_sequence_is_the_same_in_every_worker():
    a, b = startup_lrs(5, 1e-3, 1e-1, seed=3), startup_lrs(5, 1e-3, 1e-1, seed=3)
    assert a == b and len(set(a)) == 5 and all(1e-3 <= x <= 1e-1 for x in a)


def test_a_killed_worker_costs_one_run_which_another_redoes(tmp_path):
    import signal
    import time

    import optuna

    url = f"sqlite:///{tmp_path}/sweep.sqlite3"
    args = [sys.executable, "-m", "metaopt", "bench", "--task", "mlp_digits", "--optimizer",
            "sgd", "--seeds", "3", "--steps", "300", "--tune-trials", "0", "--shared",
            "--device", "cpu", "--storage", url]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    doomed = subprocess.Popen([*args, "--out", str(tmp_path / "doomed")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = open_shared_storage(url)
    running = optuna.trial.TrialState.RUNNING
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until it holds a seed run
        names = [s.study_name for s in optuna.get_all_study_summaries(store)]
        runs = [n for n in names if n.endswith("/runs")]
        if runs and optuna.load_study(study_name=runs[0], storage=store).get_trials(
                states=(running,)):
            break
        time.sleep(0.05)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    done = subprocess.run([*args, "--out", str(tmp_path / "rest")], env=env,
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    study = optuna.load_study(study_name=runs[0], storage=store)
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.FAIL]
    assert sorted(t.params["seed"] for t in complete) == [0, 1, 2]
    assert len(failed) == 1  # the killed worker's run, failed by heartbeat and redone
    killed_seed = failed[0].params["seed"]
    assert killed_seed in {r["seed"] for r in records(str(tmp_path / "rest"))}
