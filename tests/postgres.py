"""A real PostgreSQL server for the tests: Debian's binaries, a throwaway cluster.

``initdb`` makes a cluster in a temporary directory (owned by the ``postgres``
user when the tests run as root: PostgreSQL refuses to run as root), the server
listens on a free loopback port only, and it is stopped and deleted after.
Each test gets its own database in it (``new_database``), so tests never see
each other's rows. ``make test`` installs the ``postgresql`` package; without
it these tests fail, loudly, rather than skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import free_port

USER = "starchart"


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        pytest.fail("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb):"
                    " `make test` installs it, or run `apt-get install -y postgresql`")
    return Path(found[-1]).parent


class PostgresServer:
    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="starchart-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}"
        self._admin: sa.Engine | None = None

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:  # the server will not run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", USER, "-A", "trust", "-E", "UTF8",
                  "--no-sync")
        # The tests kill starchart processes, never PostgreSQL: fsync buys them nothing.
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1"
                   f" -c unix_socket_directories={self.root} -c fsync=off"
                   " -c max_connections=200")
        self._options = options
        self._boot()
        self._admin = sa.create_engine(f"{self.url}/postgres", isolation_level="AUTOCOMMIT",
                                       poolclass=sa.NullPool)
        return self

    def _boot(self) -> None:
        # `pg_ctl start` with a log file: `pg_ctl restart` would keep the server's output
        # on our pipe, and the capture would never end.
        self._run("pg_ctl", "-D", str(self.data), "-o", self._options, "-l",
                  str(self.root / "server.log"), "-w", "-t", "60", "start")

    def restart(self) -> None:
        """Stop the server (every connection to it dies) and start it again, same port."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self._boot()

    def new_database(self) -> str:
        """The URL of a new, empty database."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        assert self._admin is not None
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        return f"{self.url}/{name}"

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.dispose()
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.stop()
