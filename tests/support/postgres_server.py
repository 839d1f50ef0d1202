"""A throwaway PostgreSQL server for tests: a fresh cluster (``initdb``) in a temporary folder,
listening on 127.0.0.1 at a free port (its socket in the same folder), trust authentication,
stopped and deleted afterwards. Run as the ``postgres`` user when the tests run as root
(PostgreSQL refuses to run as root)."""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from typing import Iterator


def postgres_bin() -> str | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (Debian's /usr/lib/postgresql/N/bin, newest
    first, else ``PATH``), or None when PostgreSQL is not installed."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if all(os.path.exists(os.path.join(folder, b)) for b in ("initdb", "pg_ctl")):
            return folder
    found = shutil.which("initdb")
    return os.path.dirname(found) if found and shutil.which("pg_ctl") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    """``cmd`` run as ``postgres`` when we are root, else as ourselves."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yield a URL prefix ``postgresql+psycopg2://metaopt@127.0.0.1:PORT/``
    (append a database name: :func:`create_database` makes one)."""
    bindir = postgres_bin()
    assert bindir, "PostgreSQL binaries not found"
    root = tempfile.mkdtemp(prefix="metaopt-pg-")
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data, port = os.path.join(root, "data"), free_port()
    run = lambda *cmd: subprocess.run(_as_server_user(list(cmd)), check=True,
                                      capture_output=True, timeout=120)
    run(f"{bindir}/initdb", "-D", data, "-U", "metaopt", "-A", "trust", "--no-sync")
    opts = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=50")
    run(f"{bindir}/pg_ctl", "-D", data, "-o", opts, "-l", os.path.join(root, "log"), "-w",
        "-t", "60", "start")
    try:
        yield f"postgresql+psycopg2://metaopt@127.0.0.1:{port}/"
    finally:
        subprocess.run(_as_server_user([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate",
                                        "-w", "stop"]), capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def create_database(prefix: str, name: str) -> str:
    """Create database ``name`` on the server at ``prefix``; its URL."""
    import psycopg2

    port = int(prefix.rsplit(":", 1)[1].strip("/"))
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="metaopt", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return prefix + name
