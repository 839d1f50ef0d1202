"""The search store: one writer at a time (a lock released on exit and on crash), one-line
errors for full disks and corrupt, foreign or read-only files, and nothing left behind by a
failed start."""
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from search.evolve import run
from search.fitness import FitnessConfig
from search.store import LockedStore, Store, StoreError, open_store

ROW = {"text": "t", "pruned": "p", "struct_hash": "h", "fingerprint": "f", "fitness": 1.0,
       "best_lr": 0.1, "task_lrs": [0.1, 0.01], "parent": None, "generation": 0,
       "cache_hit": 0, "eval_seconds": 0.0, "check_tries": 0}
KW = dict(budget=4, batch=2, population=2, tournament=1, progress=False,
          fitness=FitnessConfig(steps=3, lrs=(0.1,)))


def test_second_writer_gets_a_one_line_error_until_the_first_closes(tmp_path):
    first = open_store(str(tmp_path), resume=False)
    with pytest.raises(StoreError, match="in use by another process") as err:
        open_store(str(tmp_path), resume=True)
    assert "\n" not in str(err.value)
    first.close()
    open_store(str(tmp_path), resume=True).close()


def test_lock_of_a_killed_holder_is_released(tmp_path):
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from search.store import open_store\n"
            "s = open_store(%r, resume=False); print('held', flush=True); time.sleep(60)\n"
            % (os.getcwd(), str(tmp_path)))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(StoreError, match="in use"):
        LockedStore(os.path.join(tmp_path, "search.sqlite"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    LockedStore(os.path.join(tmp_path, "search.sqlite")).close()


def test_two_searches_on_one_folder_do_not_interleave(tmp_path):
    holder = open_store(str(tmp_path), resume=False)
    with pytest.raises(StoreError, match="in use"):
        run("quadratic", out=str(tmp_path), resume=True, **KW)
    holder.close()
    assert Store(os.path.join(tmp_path, "search.sqlite")).count() == 0


def test_full_disk_is_a_one_line_error_naming_sqlite_s_reason(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    store.commit([ROW])
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")  # no room for another page
    with pytest.raises(StoreError, match="full") as err:
        store.commit([dict(ROW, text="x" * 200_000)])
    assert "\n" not in str(err.value) and "s.sqlite" in str(err.value)
    assert store.count() == 1  # the failed transaction left nothing
    assert store.rows()[0]["task_lrs"] == [0.1, 0.01]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign", "empty_table"])
def test_corrupt_or_foreign_store_is_a_one_line_error(tmp_path, damage):
    out = tmp_path / "run"
    out.mkdir()
    path = out / "search.sqlite"
    if damage == "garbage":
        path.write_bytes(b"not a database" * 100)
    elif damage in ("truncated", "foreign", "empty_table"):
        db = sqlite3.connect(path)
        if damage == "foreign":
            db.execute("CREATE TABLE programs (x INTEGER)")
            db.execute("INSERT INTO programs VALUES (1)")
        else:
            db.execute("CREATE TABLE filler (x TEXT)")
            db.executemany("INSERT INTO filler VALUES (?)", [("y" * 1000,)] * 50)
        db.commit()
        db.close()
        if damage == "truncated":
            data = path.read_bytes()
            path.write_bytes(data[:100] + b"\x00" * 50 + data[150:len(data) // 2])
        if damage == "empty_table":
            db = sqlite3.connect(path)
            db.execute("CREATE TABLE programs (id INTEGER PRIMARY KEY)")
            db.commit()
            db.close()
    with pytest.raises(ValueError) as err:
        run("quadratic", out=str(out), resume=True, **KW)
    assert "\n" not in str(err.value) and "search.sqlite" in str(err.value)


def test_read_only_store_is_a_one_line_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    run("quadratic", out=str(tmp_path), **KW)
    os.chmod(tmp_path / "search.sqlite", 0o444)
    with pytest.raises(StoreError):
        run("quadratic", out=str(tmp_path), resume=True, **dict(KW, budget=8))


def test_out_that_is_a_file_is_rejected_before_writing(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        run("quadratic", out=str(target), **KW)
    assert target.read_text() == "x"


def test_failed_start_leaves_nothing_behind(tmp_path, monkeypatch):
    import search.evolve as evolve

    def broken(*a, **k):
        raise ValueError("backend failed to start")

    out = tmp_path / "run"
    monkeypatch.setattr(evolve, "make_backend", broken)
    with pytest.raises(ValueError, match="backend failed"):
        run("quadratic", out=str(out), **KW)
    assert not out.exists()

    monkeypatch.undo()
    calls = {"n": 0}
    real = evolve._Evolution.load_or_start

    def crash_first(self, key):
        calls["n"] += 1
        raise RuntimeError("died before the first commit")

    monkeypatch.setattr(evolve._Evolution, "load_or_start", crash_first)
    with pytest.raises(RuntimeError):
        run("quadratic", out=str(out), **KW)
    assert not out.exists()
    monkeypatch.setattr(evolve._Evolution, "load_or_start", real)
    assert run("quadratic", out=str(out), **KW).summary["evaluated"] == 4
