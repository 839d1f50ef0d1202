"""The search's SQLite store (WAL): every evaluated program with its fitness, tuned lr(s),
hashes, parent, generation and timings, the held-out meta-validation scores, plus a snapshot of
the evolution (population, random state, counters) written in the same transaction as the
evaluations it follows. A run killed at any point resumes from the last snapshot with every
committed evaluation kept and none re-run.

One writer at a time: a store in a folder is opened under an exclusive ``flock`` on
``search.sqlite.lock`` beside it; the operating system releases it when the process exits or
crashes, so a second writer gets a one-line error and a killed holder never blocks a resume.
Every SQLite failure (a full disk, a malformed, read-only or foreign file) is a one-line
:class:`StoreError` naming the file.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS programs (
  id INTEGER PRIMARY KEY,
  text TEXT NOT NULL,
  pruned TEXT NOT NULL,
  struct_hash TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  fitness REAL,
  best_lr REAL,
  parent INTEGER,
  generation INTEGER NOT NULL,
  cache_hit INTEGER NOT NULL,
  eval_seconds REAL NOT NULL,
  check_tries INTEGER NOT NULL,
  created REAL NOT NULL,
  task_lrs TEXT
);
CREATE INDEX IF NOT EXISTS programs_fp ON programs(fingerprint);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS validation (
  evaluated INTEGER NOT NULL,
  generation INTEGER NOT NULL,
  program INTEGER NOT NULL,
  fingerprint TEXT NOT NULL,
  score REAL,
  task_scores TEXT NOT NULL
);
"""

COLUMNS = ("text", "pruned", "struct_hash", "fingerprint", "fitness", "best_lr", "parent",
           "generation", "cache_hit", "eval_seconds", "check_tries", "task_lrs")
LOCK_SUFFIX = ".lock"


class StoreError(ValueError):
    """A search store that cannot be used; the message is one line naming the file."""


def _finite_or_none(x):
    return x if x is not None and math.isfinite(x) else None


class Store:
    """A search database at ``path`` (created when missing)."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            cols = {r[1] for r in self.db.execute("PRAGMA table_info(programs)")}
            if "task_lrs" not in cols:  # a store written before per-task lrs were kept
                self.db.execute("ALTER TABLE programs ADD COLUMN task_lrs TEXT")
            missing = set(COLUMNS) - {r[1] for r in self.db.execute("PRAGMA table_info(programs)")}
            if missing:
                raise sqlite3.DatabaseError(f"table programs lacks columns {sorted(missing)}")
        except sqlite3.Error as err:
            raise self._error("cannot open", err) from None

    def _error(self, what: str, err: Exception) -> StoreError:
        return store_error(self.path, what, err)

    def close(self) -> None:
        self.db.close()

    def get_meta(self, key: str):
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            return None if row is None else json.loads(row[0])
        except (sqlite3.Error, ValueError) as err:
            raise self._error(f"cannot read meta {key!r}", err) from None

    def commit(self, rows: list[dict], snapshot=None, validation=(), **meta) -> list[int]:
        """Insert evaluated programs and, in the same transaction, validation rows, the
        evolution snapshot (a dict, or a function of the new rows' ids returning it) and other
        ``meta``. A failed write (full disk, read-only file) is a :class:`StoreError` with
        SQLite's own reason, and nothing of the transaction is kept."""
        ids = []
        try:
            self.db.execute("BEGIN IMMEDIATE")
            for r in rows:
                values = [_row_value(r, c) for c in COLUMNS] + [time.time()]
                cur = self.db.execute(
                    f"INSERT INTO programs ({', '.join(COLUMNS)}, created) "
                    f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})", values)
                ids.append(cur.lastrowid)
            for v in validation:
                self.db.execute("INSERT INTO validation VALUES (?, ?, ?, ?, ?, ?)",
                                (v["evaluated"], v["generation"], v["program"], v["fingerprint"],
                                 _finite_or_none(v["score"]), json.dumps(
                                     [_finite_or_none(s) for s in v["task_scores"]])))
            if snapshot is not None:
                meta["snapshot"] = snapshot(ids) if callable(snapshot) else snapshot
            for key, value in meta.items():
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
            self.db.execute("COMMIT")
        except sqlite3.Error as err:
            self._rollback()
            raise self._error("cannot write", err) from None
        except BaseException:
            self._rollback()
            raise
        return ids

    def _rollback(self) -> None:
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _query(self, q: str, args=()) -> list:
        try:
            return self.db.execute(q, args).fetchall()
        except sqlite3.Error as err:
            raise self._error("cannot read", err) from None

    def count(self) -> int:
        return self._query("SELECT COUNT(*) FROM programs")[0][0]

    def rows(self, ids=None) -> list[dict]:
        """Every program row (or those with ``ids``), fitness ``inf`` where it diverged and
        ``task_lrs`` decoded (None for a single-task search)."""
        q = f"SELECT id, {', '.join(COLUMNS)} FROM programs"
        if ids is not None:
            ids = list(ids)
            q += f" WHERE id IN ({', '.join('?' * len(ids))})"
        out = []
        for row in self._query(q + " ORDER BY id", ids or ()):
            r = dict(zip(("id",) + COLUMNS, row))
            r["fitness"] = math.inf if r["fitness"] is None else r["fitness"]
            r["task_lrs"] = None if r["task_lrs"] is None else json.loads(r["task_lrs"])
            out.append(r)
        return out

    def cache(self) -> dict[str, tuple[float, float | None, list | None]]:
        """fingerprint -> (fitness, best lr, task lrs) of every program trained (not a cache
        hit)."""
        q = "SELECT fingerprint, fitness, best_lr, task_lrs FROM programs WHERE cache_hit=0"
        return {fp: (math.inf if f is None else f, lr, None if t is None else json.loads(t))
                for fp, f, lr, t in self._query(q)}

    def validation(self) -> list[dict]:
        """Held-out meta-validation rows in the order written (score ``inf`` = diverged)."""
        q = "SELECT evaluated, generation, program, fingerprint, score, task_scores FROM validation"
        return [{"evaluated": e, "generation": g, "program": p, "fingerprint": fp,
                 "score": math.inf if s is None else s,
                 "task_scores": [math.inf if x is None else x for x in json.loads(ts)]}
                for e, g, p, fp, s, ts in self._query(q + " ORDER BY rowid")]


def store_error(path: str, what: str, err: Exception) -> StoreError:
    """One line: the file, what failed and SQLite's reason."""
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    return StoreError(f"search store {path}: {what}: {msg} (need a search.sqlite written by "
                      "metaopt search, on a writable disk with free space)")


def _row_value(row: dict, column: str):
    if column == "fitness":
        return _finite_or_none(row["fitness"])
    if column == "task_lrs":
        lrs = row.get("task_lrs")
        return None if lrs is None else json.dumps(lrs)
    return row[column]


class _Lock:
    """An exclusive, non-blocking ``flock`` on ``path`` (released by the OS on exit/crash)."""

    def __init__(self, path: str):
        import fcntl

        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise StoreError(f"search store {path[:-len(LOCK_SUFFIX)]} is in use by another "
                             "process (one writer at a time); wait for it or choose another --out") from None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class LockedStore(Store):
    """A :class:`Store` that holds the folder's writer lock until :meth:`close`."""

    def __init__(self, path: str):
        self.lock = _Lock(path + LOCK_SUFFIX)
        try:
            super().__init__(path)
        except BaseException:
            self.lock.release()
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.lock.release()


def store_path(out: str) -> str:
    return os.path.join(out, "search.sqlite")


def check_out(out: str, resume: bool) -> None:
    """Validate ``out`` before anything is written: a folder (or nothing yet) whose parent is
    writable; without ``resume`` no store with programs in it."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise StoreError(f"--out {out!r} is a file; give a folder (new or holding a search)")
    parent = out if os.path.isdir(out) else (os.path.dirname(os.path.abspath(out)) or ".")
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"--out {out!r}: {parent!r} is not writable; choose a writable folder")
    path = store_path(out)
    if os.path.exists(path) and not resume:
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                n = db.execute("SELECT COUNT(*) FROM programs").fetchone()[0]
            finally:
                db.close()
        except sqlite3.Error as err:
            raise store_error(path, "cannot open", err) from None
        if n > 0:
            raise StoreError(f"{path} already holds a search; pass resume=True (--resume) or "
                             "choose an empty --out")


def open_store(out: str, resume: bool) -> Store:
    """The store in folder ``out`` under its writer lock; without ``resume`` an existing
    non-empty store is an error. Checks ``out`` before creating anything."""
    check_out(out, resume)
    os.makedirs(out, exist_ok=True)
    store = LockedStore(store_path(out))
    if not resume and store.count() > 0:  # another writer filled it since the check
        store.close()
        raise StoreError(f"{store.path} already holds a search; pass resume=True (--resume) "
                         "or choose an empty --out")
    return store


def remove_empty_store(out: str) -> None:
    """Undo a failed start: remove the store files of a run that committed nothing (and the
    folder when that leaves it empty), so the corrected command is not blocked."""
    path = store_path(out)
    for suffix in ("", "-wal", "-shm", "-journal", LOCK_SUFFIX):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(out)
    except OSError:
        pass
