"""
A real PostgreSQL server for the tests: Debian's C{postgresql} package (C{initdb},
C{pg_ctl}), a cluster in a temporary directory, run as an unprivileged user and
reached through a Unix socket in that directory; stopped at the end.

Tests that use it are marked C{e2e}: with C{PXE_PILOT_REQUIRE_E2E=1} (CI) a missing
server fails the run instead of skipping it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
# The user the server runs as when the tests run as root (CI): PostgreSQL refuses root.
SERVER_USER = "nobody"


def _binary(name: str) -> Path | None:
    for directory in BIN_DIRS:
        if (directory / name).exists():
            return directory / name
    return None


class PostgresServer:
    """
    One PostgreSQL cluster in C{directory}, listening only on a Unix socket there.

    @ivar directory: Holds the cluster (C{data}), the socket and the server's log.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "server.log"
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = SERVER_USER
            # The server's user must own its cluster and reach the directory.
            directory.chmod(0o755)
            parent = directory.parent
            parent.chmod(parent.stat().st_mode | 0o011)
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        self.superuser = self._user or pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", self._user, "--"] if self._user else []
        return subprocess.run(
            [*prefix, *command],
            check=check,
            capture_output=True,
            text=True,
            cwd=self.directory,
            timeout=120,
        )

    def init(self) -> None:
        initdb = _binary("initdb")
        assert initdb is not None
        self._run(
            str(initdb),
            "-D",
            str(self.data),
            "-U",
            self.superuser,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def start(self) -> None:
        """
        Start the server and wait until it accepts connections.
        """
        pg_ctl = _binary("pg_ctl")
        assert pg_ctl is not None
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.directory}' "
            "-c fsync=off -c max_connections=100"
        )
        self._run(
            str(pg_ctl), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        pg_ctl = _binary("pg_ctl")
        assert pg_ctl is not None
        self._run(str(pg_ctl), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def url(self, database: str = "postgres") -> str:
        """
        A libpq URL of C{database}, through the socket.
        """
        return f"postgresql://{self.superuser}@/{database}?host={self.directory}"

    def create_database(self) -> str:
        """
        A new, empty database; its URL.
        """
        import psycopg

        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def postgres_available() -> str | None:
    """
    Why no server can be run here, or L{None} when one can.
    """
    if _binary("initdb") is None or _binary("pg_ctl") is None:
        return "Debian's postgresql package is not installed (initdb, pg_ctl)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser is missing: the server cannot run as an unprivileged user"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    return None


@contextmanager
def running_server() -> Iterator[PostgresServer]:
    """
    A new server, in a temporary directory of its own (under C{/tmp}, which its user
    can reach), stopped and removed at the end; skips when none can be run here.
    """
    missing = postgres_available()
    if missing is not None:
        pytest.skip(missing)
    with tempfile.TemporaryDirectory(prefix="pxe-pilot-pg-") as name:
        server = PostgresServer(Path(name))
        server.init()
        server.start()
        try:
            yield server
        finally:
            server.stop("immediate")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """
    One PostgreSQL server for the test session.
    """
    with running_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """
    The URL of a new, empty database of the session's server.
    """
    return postgres_server.create_database()
