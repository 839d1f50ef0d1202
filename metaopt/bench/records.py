"""The curve store: one JSON line per finished (task, optimizer, seed) run.

Each record is appended with a single write followed by ``fsync`` as soon as its run ends, so a
killed benchmark loses at most the run in progress. A line cut short by a crash (no trailing
newline) is dropped when the store is opened again, and ``keys()`` tells a resumed benchmark
which runs are finished.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .atomic import write_atomic

Key = tuple[str, str, int]


def record_key(record: dict) -> Key:
    """The identity of a run: ``(task, optimizer, seed)``."""
    return record["task"], record["optimizer"], int(record["seed"])


class CurveStore:
    """Append-only JSON-lines file of run records."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._drop_partial_line()

    def _drop_partial_line(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            write_atomic(self.path, data[:cut])

    def load(self) -> list[dict]:
        """Every complete record, in the order written."""
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def keys(self) -> set[Key]:
        """Keys of the finished runs."""
        return {record_key(r) for r in self.load()}

    def append(self, record: dict) -> None:
        """Append one record durably (single write, flush, fsync)."""
        line = json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
