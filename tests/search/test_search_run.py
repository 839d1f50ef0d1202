"""search.run and `metaopt search`: the store, resume after SIGKILL, outputs and errors."""
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

import search
from metaopt import tasks
from search.cli import main
from search.evolve import run
from search.fitness import FitnessConfig

FAST = FitnessConfig(steps=10, lrs=(0.01, 0.1, 1.0))


def _rows(out):
    db = sqlite3.connect(os.path.join(out, "search.sqlite"))
    rows = db.execute("SELECT id, text, fingerprint, fitness, cache_hit, parent FROM programs "
                      "ORDER BY id").fetchall()
    db.close()
    return rows


def test_run_with_a_task_object_stores_every_evaluation(tmp_path):
    task = tasks.get("quadratic", dim=8, noise=0.2)
    res = run(task, budget=40, seed=1, out=str(tmp_path), warm_start="sgd", population=8,
              tournament=3, batch=4, fitness=FAST, progress=False)
    s = res.summary
    rows = _rows(tmp_path)
    assert len(rows) == s["evaluated"] == 40 == len(res.history)
    assert s["unique"] + s["cache_hits"] == 40
    trained = [r[2] for r in rows if not r[4]]
    assert len(trained) == len(set(trained)) == s["unique"]          # no function trained twice
    assert all(r[2] in set(trained) for r in rows if r[4])           # hits reuse trained ones
    assert all(r[5] is not None for r in rows[1:]) and rows[0][5] is None
    finite = [r[3] for r in rows if r[3] is not None]
    assert res.fitness == pytest.approx(min(finite))
    assert res.fitness <= rows[0][3]                                # never worse than the start
    assert [h["best"] for h in res.history] == sorted((h["best"] for h in res.history), reverse=True)
    assert isinstance(res.best, search.Program)


def test_run_is_reproducible_and_rejects_bad_arguments(tmp_path):
    kw = dict(budget=12, seed=5, warm_start="adamw", population=4, tournament=2, batch=3,
              fitness=FAST, progress=False)
    a, b = run("quadratic", **kw), run("quadratic", **kw)
    assert [h["fitness"] for h in a.history] == [h["fitness"] for h in b.history]
    for bad in (dict(budget=0), dict(tournament=9), dict(backend="mpi"), dict(warm_start="/nope"),
                dict(resume=True)):
        with pytest.raises(ValueError):
            run("quadratic", **{**kw, **bad})
    with pytest.raises(ValueError):
        run(object(), budget=3)
    run("quadratic", **{**kw, "out": str(tmp_path)})
    with pytest.raises(ValueError, match="resume"):
        run("quadratic", **{**kw, "out": str(tmp_path)})


def test_cli_writes_outputs(tmp_path, capsys):
    out = str(tmp_path / "run")
    code = main(["--task", "quadratic", "--budget", "30", "--seed", "0", "--out", out,
                 "--population", "8", "--tournament", "2", "--steps", "10", "--no-progress",
                 "--funnel-steps", "30"])
    assert code == 0
    summary = json.load(open(os.path.join(out, "summary.json")))
    simple = search.parse(open(os.path.join(out, "best_simplified.txt")).read())
    assert summary["simplified_fitness"] <= summary["best_fitness"] * 1.01
    assert len(simple) <= summary["best_statements"]
    funnel = json.load(open(os.path.join(out, "funnel.json")))
    assert 1 <= len(funnel) <= 5
    assert summary["funnel_advanced"] == sum(f["fitness"] < summary["funnel_baseline"] for f in funnel)
    assert all(f["beats_baseline"] == (f["fitness"] < summary["funnel_baseline"]) for f in funnel)
    assert {"best_fitness", "evaluated", "unique", "cache_hits"} <= set(summary)
    assert summary["evaluated"] == 30
    best = search.parse(open(os.path.join(out, "best.txt")).read())
    assert math.isclose(summary["best_fitness"], min(r[3] for r in _rows(out) if r[3] is not None))
    assert best.to_text() in {r[1] for r in _rows(out)}
    assert os.path.getsize(os.path.join(out, "progress.png")) > 1000


@pytest.mark.parametrize("argv, needle", [
    (["--task", "nope", "--budget", "3", "--out", "X"], "unknown task"),
    (["--task", "quadratic", "--budget", "x", "--out", "X"], "invalid int"),
    (["--task", "quadratic", "--budget", "3", "--out", "X", "--warm-start", "/no/such"], "cannot read"),
    (["--task", "quadratic", "--budget", "3", "--out", "X", "--backend", "mpi"], "invalid choice"),
    (["--task", "quadratic", "--budget", "0", "--out", "X"], "budget"),
    (["--task", "quadratic", "--budget", "3"], "--out"),
    (["--budget", "3", "--out", "X"], "--task"),
])
def test_cli_errors_are_one_line_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "X" / "summary.json")


def test_cli_bad_warm_start_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    assert main(["--task", "quadratic", "--budget", "3", "--out", str(tmp_path / "o"),
                 "--warm-start", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "line 1, col 1" in err and err.count("\n") == 1


SCRIPT = """
import sys
from search.evolve import run
from search.fitness import FitnessConfig
run("quadratic", budget=int(sys.argv[2]), seed=3, out=sys.argv[1], warm_start="adamw",
    population=6, tournament=2, batch=2, fitness=FitnessConfig(steps=20, lrs=(0.01, 0.1)),
    resume=len(sys.argv) > 3, progress=False)
"""


@pytest.mark.slow
def test_resume_after_sigkill_loses_and_reruns_nothing(tmp_path):
    out = str(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, out, "400"], env=env)
    db_path = os.path.join(out, "search.sqlite")
    deadline = time.time() + 120
    while time.time() < deadline:
        if os.path.exists(db_path) and len(_rows(out)) >= 12:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _rows(out)
    assert 12 <= len(before) < 400
    budget = len(before) + 20
    subprocess.run([sys.executable, "-c", SCRIPT, out, str(budget), "resume"], env=env,
                   check=True, timeout=300)
    after = _rows(out)
    assert after[:len(before)] == before                   # nothing committed was lost
    assert len(after) == budget                            # nothing counted twice
    trained = [r[2] for r in after if not r[4]]
    assert len(trained) == len(set(trained))               # no function trained twice


def test_plateau_restarts_reset_the_population(tmp_path):
    res = run("quadratic", budget=60, seed=0, warm_start="sgd", population=4, tournament=2,
              batch=4, plateau=8, fitness=FitnessConfig(steps=3, lrs=(0.1,)), progress=False)
    assert res.summary["restarts"] >= 1


def test_cli_resume_continues_the_same_run(tmp_path):
    out = str(tmp_path)
    argv = ["--task", "quadratic", "--seed", "4", "--out", out, "--population", "6",
            "--tournament", "2", "--steps", "5", "--batch", "5", "--no-progress"]
    assert main(argv + ["--budget", "16"]) == 0
    first = _rows(out)
    assert main(argv + ["--budget", "31", "--resume"]) == 0
    again = _rows(out)
    assert again[:len(first)] == first and len(again) == 31
    assert json.load(open(os.path.join(out, "summary.json")))["evaluated"] == 31
    assert main(argv + ["--budget", "40", "--resume", "--population", "7"]) == 2


def _three_steps(prog, lr, w, grads):
    """``w`` after the program's first three steps (as an update rule) on ``grads``."""
    rule = search.to_rule(prog, lr=lr)
    state = rule.init(w)
    for t, g in enumerate(grads, 1):
        delta, state = rule.update(g, w, state, rule.hp, t)
        w = w - delta
    return w


def test_named_warm_starts_step_as_their_closed_forms():
    """adamw: ``m = 0.9 m + 0.1 g``, ``v = 0.999 v + 0.001 g^2``, ``w -= lr (m / (sqrt(v) +
    1e-8) + 0.01 w)`` (Chen et al. 2023's start, no bias correction); sgd: ``w -= lr g``.
    Written out in float64 Python floats."""
    from search.warm import warm_start

    w0, lr = [0.5, -1.0, 2.0], 0.1
    grads = [[0.3, -0.2, 1.0], [0.0, 0.5, -1.5], [-0.7, 0.1, 0.2]]
    w, m, v, sgd = list(w0), [0.0] * 3, [0.0] * 3, list(w0)
    for g in grads:
        m = [0.9 * mi + 0.1 * gi for mi, gi in zip(m, g)]
        v = [0.999 * vi + 0.001 * gi * gi for vi, gi in zip(v, g)]
        w = [wi - lr * (mi / (math.sqrt(vi) + 1e-8) + 0.01 * wi) for wi, mi, vi in zip(w, m, v)]
        sgd = [wi - lr * gi for wi, gi in zip(sgd, g)]
    as_tensors = [torch.tensor(g, dtype=torch.float64) for g in grads]
    start = torch.tensor(w0, dtype=torch.float64)
    for name, expected in (("adamw", w), ("sgd", sgd)):
        got = _three_steps(warm_start(name), lr, start, as_tensors)
        torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64),
                                   rtol=1e-12, atol=1e-14)


RANDOM_TEXT = ("import sys; from search.warm import warm_start; "
               "sys.stdout.write(warm_start('random', seed=1).to_text())")


def test_random_warm_start_is_fixed_by_its_seed_across_processes(tmp_path):
    """The program a seed draws is the same in another interpreter with another string hash
    seed (a set or dict order would show there), differs between seeds, and parses back."""
    from search.parse import parse
    from search.warm import warm_start

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", RANDOM_TEXT], env=env, check=True,
                           capture_output=True, text=True, timeout=120).stdout
    first = warm_start("random", seed=1)
    assert first.to_text() == other
    assert len({warm_start("random", seed=s).to_text() for s in range(1, 9)}) > 1
    assert parse(first.to_text()) == first  # a valid program: its text parses back to it
    f = tmp_path / "p.txt"
    f.write_text(warm_start("adamw").to_text())
    assert warm_start(str(f)) == warm_start("adamw")
