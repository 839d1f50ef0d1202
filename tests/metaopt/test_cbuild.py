"""Building, caching and running C kernels (``metaopt.cbuild``)."""
from __future__ import annotations

import multiprocessing as mp
import sys

import pytest
import torch

from metaopt import cbuild, ckernel

pytestmark = pytest.mark.skipif(not cbuild.available(), reason="no C compiler")


def _update(g, p, s, hp, step):
    return g * 0.5, {"m": s["m"] + g}


def _child_step(ps, gs, ms) -> None:
    ckernel.step(_update, ps, gs, [{"m": ms[0]}], {}, 1)


@pytest.mark.skipif(sys.platform != "linux", reason="fork")
def test_a_forked_child_steps_single_threaded_instead_of_hanging():
    """GNU OpenMP's thread pool does not survive ``fork``: a child of a process that ran a
    parallel region waits forever in its own first one. After a 2-thread step here, a forked
    child's step finishes (it runs on one thread; without ``cbuild.threads`` it hung on this
    machine's libgomp)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ps, gs, ms = [torch.randn(300, 300)], [torch.randn(300, 300)], [torch.randn(300, 300)]
        ckernel.step(_update, ps, gs, [{"m": ms[0]}], {}, 1)  # a parallel region here
        assert cbuild.threads(2) == 2
        ctx = mp.get_context("fork")
        guarded = ctx.Process(target=_child_step, args=(ps, gs, ms))
        guarded.start()
        guarded.join(30)
        alive = guarded.is_alive()
        if alive:
            guarded.kill()
        assert not alive and guarded.exitcode == 0
    finally:
        torch.set_num_threads(threads)


def test_threads_is_the_request_in_the_process_that_first_went_parallel(monkeypatch):
    monkeypatch.setattr(cbuild, "_PARALLEL_PID", None)
    assert cbuild.threads(1) == 1
    assert cbuild._PARALLEL_PID is None  # one thread opens no pool
    assert cbuild.threads(4) == 4
    monkeypatch.setattr(cbuild, "_PARALLEL_PID", -1)  # as a forked child sees it
    assert cbuild.threads(4) == 1


def test_the_cache_key_covers_source_flags_and_machine(monkeypatch, tmp_path):
    """A change of source or flags builds a new library; the same ones load the old one."""
    monkeypatch.setenv("METAOPT_KERNEL_CACHE", str(tmp_path))
    src = "int f(void) { return 1; }\n"
    a = cbuild.build(src, ("-O2", "-shared", "-fPIC"), "t", "test")
    assert cbuild.build(src, ("-O2", "-shared", "-fPIC"), "t", "test") == a
    b = cbuild.build(src.replace("1", "2"), ("-O2", "-shared", "-fPIC"), "t", "test")
    c = cbuild.build(src, ("-O1", "-shared", "-fPIC"), "t", "test")
    assert len({a, b, c}) == 3
    assert cbuild.load(src.replace("1", "2"), ("-O2", "-shared", "-fPIC"), "t", "test").f() == 2


def test_a_compiler_error_is_one_runtime_error_naming_the_caller(monkeypatch, tmp_path):
    monkeypatch.setenv("METAOPT_KERNEL_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"^test: .* failed: .*error"):
        cbuild.build("this is not C", ("-shared", "-fPIC"), "t", "test")
    assert not list(tmp_path.rglob("*.so")) and not [p for p in tmp_path.iterdir() if p.is_dir()]


def test_an_unwritable_cache_is_a_runtime_error_that_says_what_to_set(monkeypatch, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("METAOPT_KERNEL_CACHE", str(blocked / "kernels"))  # under a file
    with pytest.raises(RuntimeError, match="METAOPT_KERNEL_CACHE"):
        cbuild.build("int f(void) { return 1; }\n", ("-shared", "-fPIC"), "t", "test")
