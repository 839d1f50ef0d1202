"""C kernels built once per machine with the system C compiler and loaded through :mod:`ctypes`.

Used by the zoo's generated CPU steps (:mod:`metaopt.ckernel`) and the learned optimizer's
fused CPU step (:mod:`learned.fused_mlp_cpu`). A kernel's shared library is written into
``$METAOPT_KERNEL_CACHE`` (default ``~/.cache/metaopt/kernels``) under a name hashing its
source, the compiler, the flags and this CPU's model and flags (``-march=native`` code runs
only where it was built), atomically (built in a temporary folder beside it, then renamed),
so a later process, or another process racing this one, loads it in milliseconds and never
sees a half-written file. No Python objects cross the boundary: pointers and sizes only.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path


def compiler() -> str | None:
    """The C compiler used (``$CC`` if set, else ``cc``, else ``gcc``), or None."""
    for name in (os.environ.get("CC"), "cc", "gcc"):
        found = _which(name) if name else None
        if found:
            return found
    return None


@functools.lru_cache(maxsize=None)
def _which(name: str) -> str | None:
    """``shutil.which``, once per name (callers ask at every optimizer step)."""
    return shutil.which(name)


def available() -> bool:
    """Whether this machine can build kernels (a C compiler is on the PATH)."""
    return compiler() is not None


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """This CPU's model name and instruction-set flags (part of every kernel's cache key)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(dict.fromkeys(  # one line each: every core repeats them
            line for line in lines if line.startswith(("model name", "flags")))) \
            or platform.machine()
    except OSError:
        return platform.processor() or platform.machine()


def cache_dir() -> Path:
    return Path(os.environ.get("METAOPT_KERNEL_CACHE",
                               Path.home() / ".cache" / "metaopt" / "kernels"))


def build(source: str, flags: tuple[str, ...], prefix: str, what: str) -> Path:
    """The shared library compiled from the C ``source`` with ``flags``: from the cache when
    it is there, else built now. ``prefix`` starts the file's name; ``what`` names the caller
    in errors. Raises ``RuntimeError`` when there is no compiler, it fails, or the cache
    folder cannot be written."""
    cc = compiler()
    if cc is None:
        raise RuntimeError(f"{what}: no C compiler found (set $CC)")
    key = hashlib.sha256("\0".join((source, cc, *flags, cpu_model())).encode()).hexdigest()[:24]
    path = cache_dir() / f"{prefix}_{key}.so"
    if path.exists():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            src, out = Path(tmp) / f"{prefix}.c", Path(tmp) / path.name
            src.write_text(source)
            run = subprocess.run([cc, *flags, "-o", str(out), str(src), "-lm"],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"{what}: {cc} failed: {' '.join(run.stderr.split())[:500]}")
            os.replace(out, path)
    except OSError as err:
        raise RuntimeError(f"{what}: cannot build into the kernel cache {path.parent} ({err}); "
                           "set $METAOPT_KERNEL_CACHE to a writable folder") from None
    return path


#: the process that first ran a kernel's OpenMP region with more than one thread
_PARALLEL_PID: int | None = None


def threads(requested: int) -> int:
    """Threads for a kernel's OpenMP region: ``requested`` (torch's intra-op count), except
    1 in a process forked from one that already ran a parallel region. GNU OpenMP's thread
    pool does not survive ``fork``: a child entering a parallel region waits forever for the
    parent's threads (``tests/metaopt/test_cbuild.py`` forks such a child)."""
    global _PARALLEL_PID
    if requested <= 1:
        return 1
    pid = os.getpid()
    if _PARALLEL_PID is None:
        _PARALLEL_PID = pid
    return requested if _PARALLEL_PID == pid else 1


def load(source: str, flags: tuple[str, ...], prefix: str, what: str) -> ctypes.CDLL:
    """:func:`build`, then the library loaded."""
    return ctypes.CDLL(str(build(source, flags, prefix, what)))
