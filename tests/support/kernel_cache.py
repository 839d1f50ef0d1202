"""The on-disk kernel cache's contract, for every kernel family built by ``metaopt.cbuild``."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from metaopt import cbuild


def assert_built_once_then_loaded(build: Callable[[], object], clear: Callable[[], None],
                                  folder: Path, pattern: str, monkeypatch) -> None:
    """``build()`` writes one library matching ``pattern`` into ``folder``; after ``clear()``
    (a new process's empty in-memory caches) it loads that file without running the
    compiler, and no half-written build folder is left beside it."""
    clear()
    build()
    built = list(folder.glob(pattern))
    assert len(built) == 1
    clear()

    def no_compiler(*a, **kw):
        raise AssertionError("the cached kernel was rebuilt")

    monkeypatch.setattr(cbuild.subprocess, "run", no_compiler)
    build()
    assert list(folder.glob(pattern)) == built
    assert not [f for f in folder.iterdir() if f.is_dir()]
    clear()
