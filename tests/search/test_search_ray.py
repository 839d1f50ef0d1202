"""The Ray backend (a local Ray cluster) gives the same search as the local backend."""
import pytest

from search.evolve import run
from search.fitness import FitnessConfig


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_backend_matches_local(tmp_path):
    pytest.importorskip("ray")
    kw = dict(budget=16, seed=2, warm_start="adamw", population=4, tournament=2, batch=4,
              fitness=FitnessConfig(steps=8, lrs=(0.01, 0.1)), progress=False)
    local = run("quadratic", **kw)
    remote = run("quadratic", backend="ray", workers=2, out=str(tmp_path), **kw)
    assert remote.summary["evaluated"] == 16
    assert [h["fitness"] for h in remote.history] == pytest.approx(
        [h["fitness"] for h in local.history], rel=1e-5)


def _ray_cli():
    import shutil

    exe = shutil.which("ray")
    if exe is None:
        pytest.skip("the ray command is not installed")
    return exe


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_search_joins_a_running_cluster_and_matches_local(tmp_path):
    """`ray start --head --num-cpus 2`, then a search that joins it through RAY_ADDRESS (no
    resources passed), with --workers from the cluster: same history as the local backend."""
    import os
    import subprocess

    pytest.importorskip("ray")
    ray = _ray_cli()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    import socket
    import tempfile

    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = subprocess.run([ray, "start", "--head", "--num-cpus", "2", "--include-dashboard=false",
                            "--disable-usage-stats", f"--temp-dir={temp}", "--port", str(port)],
                           env=env, capture_output=True, text=True, timeout=300)
    if start.returncode != 0:
        pytest.skip(f"ray start failed here: {start.stderr.strip().splitlines()[-1:]}")
    try:
        import re

        m = re.search(r"--address='([^']+)'", start.stdout + start.stderr)
        address = m.group(1) if m else f"127.0.0.1:{port}"
        kw = dict(budget=12, seed=1, population=4, tournament=2, batch=4,
                  fitness=FitnessConfig(steps=6, lrs=(0.01, 0.1)), progress=False)
        local = run("quadratic", **kw)
        os.environ["RAY_ADDRESS"] = address
        try:
            remote = run("quadratic", backend="ray", out=str(tmp_path / "out"), **kw)
        finally:
            del os.environ["RAY_ADDRESS"]
        assert remote.summary["evaluated"] == 12
        assert [h["fitness"] for h in remote.history] == pytest.approx(
            [h["fitness"] for h in local.history], rel=1e-5)
    finally:
        _stop_cluster(temp)
        import shutil

        shutil.rmtree(temp, ignore_errors=True)


def test_ray_backend_without_a_cluster_at_the_address_fails_in_one_line_and_leaves_nothing(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="cannot start or join") as err:
        run("quadratic", backend="ray", address="127.0.0.1:1", out=str(out), budget=4,
            progress=False)
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_address_needs_the_ray_backend():
    with pytest.raises(ValueError, match="--backend ray"):
        run("quadratic", address="127.0.0.1:1", budget=2, progress=False)


def _stop_cluster(temp: str) -> None:
    """Kill only this test's Ray processes (those whose command line names its temp dir);
    ``ray stop`` would stop every Ray cluster of the user on the machine."""
    import os
    import signal
    import time

    def ours():
        pids = []
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != os.getpid():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        if temp.encode() in fh.read():
                            pids.append(int(pid))
                except OSError:
                    pass
        return pids

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        time.sleep(2)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_ray_worker_killed_mid_search_costs_only_its_chunk(tmp_path):
    """SIGKILL a Ray worker while it trains a chunk of candidates: Ray retries the chunk (a
    pure function of its program texts), so the search finishes with its whole budget and
    the same history as the local backend; the store, written by the driver only, holds each
    evaluation once."""
    import os
    import signal
    import sqlite3
    import threading
    import time

    pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    kw = dict(budget=16, seed=3, warm_start="adamw", population=4, tournament=2, batch=4,
              fitness=FitnessConfig(steps=60, lrs=(0.01, 0.1)), progress=False)
    local = run("mlp_digits", **kw)
    killed, stop = [], threading.Event()

    def kill_one_worker_while_it_trains():
        while not stop.is_set() and not killed:
            for proc in psutil.process_iter(["pid", "cmdline"]):
                if "ray::_evaluate_texts" in " ".join(proc.info["cmdline"] or []):
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    killed.append(proc.info["pid"])
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_worker_while_it_trains, daemon=True)
    killer.start()
    try:
        remote = run("mlp_digits", backend="ray", workers=2, out=str(tmp_path), **kw)
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray worker was caught training"
    assert remote.summary["evaluated"] == 16
    assert [h["fitness"] for h in remote.history] == pytest.approx(
        [h["fitness"] for h in local.history], rel=1e-5)
    with sqlite3.connect(tmp_path / "search.sqlite") as db:
        ids = [r[0] for r in db.execute("select id from programs order by id")]
    assert ids == sorted(set(ids)) and len(ids) == 16  # every evaluation stored exactly once
