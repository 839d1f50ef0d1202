"""The search's SQLite store (WAL): every evaluated program with its fitness, hashes, parent,
generation and timings, plus a snapshot of the evolution (population, random state, counters)
written in the same transaction as the evaluations it follows. A run killed at any point
resumes from the last snapshot with every committed evaluation kept and none re-run."""
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
  created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS programs_fp ON programs(fingerprint);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

COLUMNS = ("text", "pruned", "struct_hash", "fingerprint", "fitness", "best_lr", "parent",
           "generation", "cache_hit", "eval_seconds", "check_tries")


class Store:
    """A search database at ``path`` (created when missing)."""

    def __init__(self, path: str):
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def get_meta(self, key: str):
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def commit(self, rows: list[dict], snapshot=None, **meta) -> list[int]:
        """Insert evaluated programs and, in the same transaction, the evolution snapshot
        (a dict, or a function of the new rows' ids returning it) and other ``meta``."""
        ids = []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for r in rows:
                fit = r["fitness"] if math.isfinite(r["fitness"]) else None
                values = [r[c] if c != "fitness" else fit for c in COLUMNS] + [time.time()]
                cur = self.db.execute(
                    f"INSERT INTO programs ({', '.join(COLUMNS)}, created) "
                    f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})", values)
                ids.append(cur.lastrowid)
            if snapshot is not None:
                meta["snapshot"] = snapshot(ids) if callable(snapshot) else snapshot
            for key, value in meta.items():
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return ids

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM programs").fetchone()[0]

    def rows(self, ids=None) -> list[dict]:
        """Every program row (or those with ``ids``), fitness ``inf`` where it diverged."""
        q = f"SELECT id, {', '.join(COLUMNS)} FROM programs"
        if ids is not None:
            ids = list(ids)
            q += f" WHERE id IN ({', '.join('?' * len(ids))})"
        cur = self.db.execute(q + " ORDER BY id", ids or ())
        out = []
        for row in cur.fetchall():
            r = dict(zip(("id",) + COLUMNS, row))
            r["fitness"] = math.inf if r["fitness"] is None else r["fitness"]
            out.append(r)
        return out

    def cache(self) -> dict[str, tuple[float, float | None]]:
        """fingerprint -> (fitness, best lr) of every program trained (not a cache hit)."""
        cur = self.db.execute("SELECT fingerprint, fitness, best_lr FROM programs WHERE cache_hit=0")
        return {fp: (math.inf if f is None else f, lr) for fp, f, lr in cur.fetchall()}


def open_store(out: str, resume: bool) -> Store:
    """The store in folder ``out``; without ``resume`` an existing non-empty store is an error."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "search.sqlite")
    exists = os.path.exists(path)
    store = Store(path)
    if exists and not resume and store.count() > 0:
        store.close()
        raise ValueError(f"{path} already holds a search; pass resume=True (--resume) or "
                         "choose an empty --out")
    return store
