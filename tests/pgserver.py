"""A PostgreSQL server of a test's own: initdb in a temporary folder, a free port of 127.0.0.1, stopped by its PID.

PostgreSQL refuses to run as root; as root (CI) the server runs as the `postgres` user Debian's package creates,
in a folder that user owns. Where the programs are missing, ``tests/postgres/install_postgres.sh`` installs them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL = Path(__file__).parent / "postgres" / "install_postgres.sh"
USER = "mlflow"  # the database's superuser, trusted on 127.0.0.1 only: no password in any URI or file


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's programs (Debian keeps them off PATH), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(os.path.realpath(initdb)).parent if initdb else None


def programs_or_skip() -> Path:
    """The programs' folder; installs them once if missing, and skips the test with the reason where it cannot."""
    if bin_dir() is None:
        result = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=900)
        if result.returncode != 0 or bin_dir() is None:
            pytest.skip(f"PostgreSQL is not installed and {INSTALL.name} could not install it: {result.stderr[-500:]}")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the PostgreSQL server as")
    return bin_dir()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One server: ``start``, ``stop`` (fast shutdown by PID) and ``restart`` on the same port and data."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # Under /tmp, not pytest's tmp_path: the `postgres` user cannot enter root's 0700 pytest folders.
        self.folder = Path(tempfile.mkdtemp(prefix="test-postgres-"))
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.user = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.folder, account.pw_uid, account.pw_gid)
            self.user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        subprocess.run(
            [bindir / "initdb", "-D", self.folder / "data", "-U", USER, "-A", "trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, timeout=120, **self.user,
        )  # fmt: skip

    def uri(self, database: str = "mlflow") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self.log = open(self.folder / "server.log", "a")  # noqa: SIM115 - open while the server runs
        self.process = subprocess.Popen(
            [self.bindir / "postgres", "-D", self.folder / "data", "-p", str(self.port), "-k", self.folder,
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=self.log, stderr=subprocess.STDOUT, **self.user,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while subprocess.run(
            [self.bindir / "pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER], capture_output=True
        ).returncode:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "PostgreSQL did not accept connections within 60 s"
            time.sleep(0.2)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open connections are closed, as when an admin restarts the database."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
        self.log.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str) -> str:
        subprocess.run(
            [self.bindir / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return self.uri(name)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def postgres() -> Iterator[PostgresServer]:
    """A started server (skips the test where PostgreSQL cannot be had), stopped and removed afterwards."""
    server = PostgresServer(programs_or_skip())
    try:
        server.start()
        yield server
    finally:
        server.close()
