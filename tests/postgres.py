"""Start a throw-away PostgreSQL server from Debian's packages on loopback (for gradebook tests)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available() -> bool:
    return _bindir() is not None


@contextlib.contextmanager
def postgres_server(database: str = "gradebook") -> Iterator[str]:
    """Run PostgreSQL in a temporary folder; yield a SQLAlchemy URL; stop and delete it after."""
    bindir = _bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: run `make system-deps` (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="cvcourse-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_root = os.geteuid() == 0
    if as_root:  # the server refuses to run as root: use Debian's postgres account
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        os.chmod(root, 0o755)

    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = [str(bindir / args[0]), *args[1:]]
        if as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)

    port = _free_port()
    run("initdb", "-D", str(data), "-A", "trust", "-U", "grader", "--no-sync")
    run("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-o",
        f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100", "start")
    try:
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "grader", database)
        yield f"postgresql+psycopg2://grader@127.0.0.1:{port}/{database}"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
