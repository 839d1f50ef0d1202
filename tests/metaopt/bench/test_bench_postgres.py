"""Bench sweeps shared through a real PostgreSQL server (:mod:`metaopt.bench.shared` with an
Optuna RDB storage over ``psycopg2``): three ``metaopt bench --shared`` worker processes, one
database; no tuning trial or seed run is done twice and every worker renders the same merged
table. The SQLite/journal twins of these checks are in ``test_bench_shared.py`` (whose worker
and table helpers are reused here)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from postgres_server import create_database, postgres_bin, postgres_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(postgres_bin() is None,
                       reason="PostgreSQL binaries (initdb, pg_ctl) are not installed; "
                              "apt-get install postgresql"),
]

_spec = importlib.util.spec_from_file_location(
    "bench_shared_helpers", os.path.join(os.path.dirname(__file__), "test_bench_shared.py"))
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("psycopg2", reason="needs psycopg2-binary (the dev extra)")
    with postgres_server() as prefix:
        yield prefix


def test_three_workers_share_one_postgresql_database(server, tmp_path):
    import optuna

    url = create_database(server, "sweep")
    outs = helpers.bench_workers(3, url, tmp_path, trials=6)
    keys = [(r["task"], r["optimizer"], r["seed"]) for o in outs for r in helpers.records(o)]
    assert sorted(keys) == [("quadratic", o, s) for o in ["adam", "sgd"] for s in range(3)], \
        "every seed run exactly once"
    store = helpers.open_shared_storage(url)
    tuning = [s.study_name for s in optuna.get_all_study_summaries(store)
              if not s.study_name.endswith(("#lock", "/runs"))]
    assert len(tuning) == 2, tuning  # one tuning study per optimizer
    for name in tuning:
        done = optuna.load_study(study_name=name, storage=store).get_trials(
            states=(optuna.trial.TrialState.COMPLETE,))
        lrs = [t.params["lr"] for t in done]
        assert len(lrs) == 6 and len(set(lrs)) == 6, (name, lrs)
    tables = [helpers.table(o) for o in outs]
    assert tables[0] and tables[0] == tables[1] == tables[2], "every worker merges all runs"


def test_postgresql_url_without_its_driver_is_one_line_naming_psycopg2(server, tmp_path):
    url = create_database(server, "nodriver")
    out = tmp_path / "b"
    hide = ("import sys; sys.modules['psycopg2'] = None; from metaopt.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", hide, "bench", "--task", "quadratic",
                           "--optimizer", "sgd", "--shared", "--storage", url, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "psycopg2" in lines[0] and "not installed" in lines[0], lines
    assert not out.exists()


def test_workers_opening_a_fresh_database_at_once_all_succeed(server):
    # workers started together race to create Optuna's tables; PostgreSQL reports the loser
    # as a unique violation, which must be retried like SQLite's "already exists"
    code = ("import sys; from metaopt.bench.shared import open_shared_storage; "
            "open_shared_storage(sys.argv[1])")
    for i in range(4):
        url = create_database(server, f"race{i}")
        procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE,
                                  text=True) for _ in range(3)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), [e[-300:] for e in errors if e.strip()]
