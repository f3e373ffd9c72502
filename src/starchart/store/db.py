"""The database: one SQLAlchemy engine, migrated on open.

SQLite (a file in ``settings.home``) is the default; any SQLAlchemy URL works
through the ``database_url`` setting. For SQLite three things matter:

- WAL journal: readers never wait for the writer, so a conversation being
  streamed into does not stall another one being read.
- ``busy_timeout``: a writer waits its turn instead of failing at once.
- Writes begin with ``BEGIN IMMEDIATE``. pysqlite's default (a deferred
  transaction that upgrades to a write lock on the first INSERT) can fail with
  "database is locked" without ever waiting, when two read-then-write
  transactions race; taking the write lock up front makes them queue on the
  busy timeout instead. SQLAlchemy's documented recipe: turn pysqlite's own
  BEGIN off and emit ours from the ``begin`` event.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from starchart.settings import Settings

DB_FILENAME = "starchart.db"
BUSY_TIMEOUT_MS = 10_000
_BEGIN_OPTION = "starchart_sqlite_begin"


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return f"sqlite:///{Path(settings.home) / DB_FILENAME}"


def _sqlite_setup(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see below)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """The engine plus the two ways to use it: ``read()`` and ``write()``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        if self.is_sqlite:
            _sqlite_setup(self.engine)
        self._watch: sqlite3.Connection | None = None

    @classmethod
    def open(cls, settings: Settings) -> Database:
        """Open (creating if needed) the database ``settings`` names and migrate it."""
        from starchart.store.migrations import migrate

        url = database_url(settings)
        if not settings.database_url:
            Path(settings.home).mkdir(parents=True, exist_ok=True)
        db = cls(url)
        migrate(db)
        return db

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that commits on success; on SQLite it holds the write lock."""
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
            with conn.begin():
                yield conn

    def data_version(self) -> int | None:
        """A number that changes whenever any other connection (another thread, process
        or replica) has committed to the database since the last call, read without a
        round trip: SQLite's ``PRAGMA data_version`` on a connection of its own that
        never writes, which looks at the WAL index in shared memory (microseconds, never
        waiting on a lock: ``timeout=0``). None when it cannot tell (a server database,
        an in-memory one, a busy file): ask the database itself.

        Not thread-safe: one caller thread (the server's event loop) per ``Database``."""
        database = self.engine.url.database
        if not self.is_sqlite or not database or database == ":memory:":
            return None
        try:
            if self._watch is None:
                self._watch = sqlite3.connect(database, timeout=0, isolation_level=None,
                                              check_same_thread=False)
            version: int = self._watch.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            return None
        return version

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
        self.engine.dispose()
