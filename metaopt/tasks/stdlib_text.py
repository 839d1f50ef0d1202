"""Real text that every machine has: the bytes of Python's standard-library source.

The corpus is the ``.py`` files under ``sysconfig.get_paths()["stdlib"]``, read in sorted path
order (directories walked in sorted order; ``site-packages``, ``dist-packages``, ``test``,
``tests``, ``idle_test`` and ``__pycache__`` skipped), joined with newlines and cut at
``max_bytes``. The first 90% is the training text, the rest validation. The text differs
between Python versions (3.11 here, 3.12 on the GPU machine), so compare numbers within one
interpreter only.
"""
from __future__ import annotations

import os
import sysconfig
from functools import lru_cache

SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test",
                       "__pycache__"})
TRAIN_FRACTION = 0.9


def stdlib_files(root: str | None = None) -> list[str]:
    """Every ``.py`` file of the standard library, in a deterministic order."""
    root = root or sysconfig.get_paths()["stdlib"]
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
    return files


@lru_cache(maxsize=4)
def stdlib_corpus(max_bytes: int) -> tuple[bytes, bytes]:
    """(train, validation) bytes of the first ``max_bytes`` of the standard library's source."""
    chunks, total = [], 0
    for path in stdlib_files():
        with open(path, "rb") as f:
            data = f.read(max_bytes - total) + b"\n"
        chunks.append(data)
        total += len(data)
        if total >= max_bytes:
            break
    text = b"".join(chunks)[:max_bytes]
    if len(text) < 1000:
        raise ValueError(f"the standard library under {sysconfig.get_paths()['stdlib']} "
                         f"gave only {len(text)} bytes of source")
    cut = int(len(text) * TRAIN_FRACTION)
    return text[:cut], text[cut:]


@lru_cache(maxsize=4)
def pydoc_corpus(max_bytes: int) -> tuple[bytes, bytes]:
    """(train, validation) bytes of English prose: the Python documentation's topic pages that
    ship with the interpreter (``pydoc_data.topics``, used by ``help()``), in sorted topic order,
    ASCII (other characters as ``?``), cut at ``max_bytes``; 90% train. It is not in
    :func:`stdlib_corpus`'s first megabytes (``pydoc_data`` comes after every top-level module in
    the walk, about 9.9 MB in on Python 3.11)."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics)).encode("ascii", "replace")[:max_bytes]
    if len(text) < 1000:
        raise ValueError(f"pydoc_data.topics gave only {len(text)} bytes of text")
    cut = int(len(text) * TRAIN_FRACTION)
    return text[:cut], text[cut:]
