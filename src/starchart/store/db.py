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

Telling a server that some data changed elsewhere (``watch`` and
``write_announced``): SQLite's ``data_version`` sees any commit by any process
for free. PostgreSQL has nothing as cheap, so writers of watched data send a
``NOTIFY`` in their transaction and each server keeps one connection listening
for it (``Listener``); the writer then waits until every listening server says
it has seen the change.
"""

from __future__ import annotations

import logging
import secrets
import selectors
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from starchart.settings import Settings

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("starchart")

DB_FILENAME = "starchart.db"
BUSY_TIMEOUT_MS = 10_000
_BEGIN_OPTION = "starchart_sqlite_begin"

SEEN_SUFFIX = "_seen"  # the channel on which listeners confirm: <channel>_seen
CONFIRM_TIMEOUT_S = 5.0  # how long a writer waits for every listening server
# An idle listener asks the database whether it is still there this often, and a
# connection whose packets go unacknowledged this long counts as gone: a server
# cut off without its connection closing (a network partition) notices within
# about HEARTBEAT_S + TCP_USER_TIMEOUT_MS.
HEARTBEAT_S = 5.0
TCP_USER_TIMEOUT_MS = 5_000
_RETRY_S = (0.05, 1.0)  # the first and the longest wait between attempts to listen


def listener_name(channel: str) -> str:
    """A listening connection's ``application_name``, from its start (before its
    LISTEN): how a writer finds the servers that must confirm they saw its change."""
    return f"starchart listening on {channel}"


def _listen_on(conn: psycopg.Connection[Any], channel: str) -> None:
    """LISTEN on ``channel``, both for a listener's notifications and a writer's
    confirmations (a channel is an identifier: quoted, not a string literal)."""
    from psycopg import sql

    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


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


class ChangeWatch(Protocol):
    def version(self) -> int | None:
        """A number that changes whenever the watched data may have changed, anywhere;
        None while that cannot be told (ask the database itself)."""
        ...


class _DataVersion:
    def __init__(self, db: Database) -> None:
        self._db = db

    def version(self) -> int | None:
        return self._db.data_version()


class _Blind:
    def version(self) -> int | None:
        return None


class Database:
    """The engine plus the two ways to use it: ``read()`` and ``write()``."""

    def __init__(self, url: str) -> None:
        self.url = url
        # A server database (PostgreSQL) may restart under us, killing every pooled
        # connection: each is checked before use (a round trip), or the first request on
        # each would fail. A SQLite file has nothing to lose.
        self.engine = sa.create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        if self.is_sqlite:
            _sqlite_setup(self.engine)
        # LISTEN/NOTIFY needs PostgreSQL through psycopg 3 (the postgres extra).
        self.can_listen = (self.engine.dialect.name == "postgresql"
                           and self.engine.dialect.driver == "psycopg")
        self._watch: sqlite3.Connection | None = None
        self._listeners: dict[str, Listener] = {}
        self._listeners_lock = threading.Lock()
        self._closed = False

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

    def watch(self, channel: str) -> ChangeWatch:
        """What tells this process, without a round trip, that the data written with
        ``write_announced(channel)`` may have changed, by any process. SQLite: its
        ``data_version`` (any commit at all). PostgreSQL: the ``Listener`` on
        ``channel``, one per channel and database, stopped by ``close()``."""
        if self.is_sqlite:
            return _DataVersion(self)
        with self._listeners_lock:
            if not self.can_listen or self._closed:
                return _Blind()
            if channel not in self._listeners:
                self._listeners[channel] = Listener(
                    lambda: self._connect(listener_name(channel)), channel)
            return self._listeners[channel]

    @contextmanager
    def write_announced(self, channel: str) -> Iterator[Connection]:
        """``write()``, and every server watching ``channel`` learns of it. On
        PostgreSQL the transaction also sends a NOTIFY on ``channel``, and this returns
        only once every listening server has confirmed it has seen it (each confirms
        after marking what it keeps as stale), so a request any of them checks after
        this returns sees the change. A server that does not confirm within
        ``CONFIRM_TIMEOUT_S`` is named in a warning; one whose connection closes
        meanwhile needs no confirmation (it reads the database on every check until it
        listens again)."""
        if not self.can_listen:
            with self.write() as conn:
                yield conn
            return
        import psycopg

        token = secrets.token_hex(8)
        with closing(self._connect()) as seen:
            _listen_on(seen, channel + SEEN_SUFFIX)
            with self.write() as conn:
                yield conn
                conn.execute(sa.text("SELECT pg_notify(:channel, :token)"),
                             {"channel": channel, "token": token})
            try:
                silent = _await_confirmations(seen, channel, token)
            except psycopg.Error as error:  # committed all the same: say so, do not fail
                log.warning("written, but could not wait for the servers listening for"
                            " changes on %s to confirm they have seen it: %s", channel, error)
                return
        if silent:
            log.warning("%d server(s) listening for changes on %s did not confirm within"
                        " %.0f s that they have seen this one (database process ids: %s);"
                        " they will see it when their notification arrives",
                        len(silent), channel, CONFIRM_TIMEOUT_S,
                        ", ".join(map(str, sorted(silent))))

    def _connect(self, name: str | None = None) -> psycopg.Connection[Any]:
        """A connection of its own, outside the pool, in autocommit; ``name``: its
        ``application_name``."""
        import psycopg

        _, params = self.engine.dialect.create_connect_args(self.engine.url)
        if name is not None:
            params["application_name"] = name
        params.setdefault("connect_timeout", 5)
        params.setdefault("tcp_user_timeout", TCP_USER_TIMEOUT_MS)
        connection: psycopg.Connection[Any] = psycopg.connect(**params, autocommit=True)
        return connection

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
        """Close every connection, stopping the listeners (their threads are gone when
        this returns). Reads and writes still work after it (on new connections);
        ``watch`` then no longer listens."""
        with self._listeners_lock:
            self._closed = True
            listeners, self._listeners = list(self._listeners.values()), {}
        for listener in listeners:
            listener.close()
        if self._watch is not None:
            self._watch.close()
        self.engine.dispose()


def _await_confirmations(conn: psycopg.Connection[Any], channel: str, token: str) -> set[int]:
    """Wait until every server listening on ``channel`` (by its connection's process
    id) has sent ``token`` back on ``<channel>_seen``; return those that did not in
    time. Counted after the commit: a server that read the data before the commit was
    listening then, so it is counted, unless its connection has closed since."""
    def listening() -> set[int]:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname ="
                            " current_database() AND application_name = %s",
                            [listener_name(channel)]).fetchall()
        return {pid for (pid,) in rows}

    waiting = listening()
    deadline = time.monotonic() + CONFIRM_TIMEOUT_S
    while waiting:
        for note in conn.notifies(timeout=max(0.0, min(0.1, deadline - time.monotonic()))):
            if note.payload == token:
                waiting.discard(note.pid)
            if not waiting:
                return waiting
        waiting &= listening()  # one whose connection has closed has nothing to confirm
        if not waiting or time.monotonic() >= deadline:
            return waiting
        # A server connected but not yet listening at the commit missed the NOTIFY
        # (its first version, once listening, already covers the change): again.
        conn.execute("SELECT pg_notify(%s, %s)", [channel, token])
    return waiting


class Listener:
    """One connection LISTENing on a channel, in a thread of its own, from the first
    ``version()`` until ``close()``.

    ``version()`` changes on every notification and on every (re)connection (what
    changed while not listening is unknown), and is None whenever nothing is
    listening: before the first connection, after a connection is lost (a dropped
    connection, a restarted database: it reconnects, waiting 50 ms doubling to 1 s)
    and after ``close()``. Each notification's payload is sent back on
    ``<channel>_seen`` once the version has changed: the writer waits for that. The
    connection carries ``listener_name(channel)`` from its start, before its LISTEN,
    so a writer counting listeners after its commit misses none that could have read
    the data before it."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], channel: str) -> None:
        self.channel = channel
        self.backend_pid: int | None = None  # the listening connection's server process
        self._connect = connect
        self._changes = 0
        # One attribute (None: not listening), so a reader never sees half a change.
        self._version: int | None = None
        self._started = self._closed = self._outage = False
        self._lock = threading.Lock()
        self._wake, self._waker = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name=f"starchart-listen-{channel}",
                                        daemon=True)

    def version(self) -> int | None:
        if not self._started:
            self.start()
        return self._version

    @property
    def listening(self) -> bool:
        return self._version is not None

    def start(self) -> None:
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
            self._thread.start()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._waker.send(b"x")
        if self._started:
            self._thread.join()
        self._version = None
        self._wake.close()
        self._waker.close()

    def _changed(self) -> None:
        self._changes += 1
        self._version = self._changes

    def _run(self) -> None:
        import psycopg

        retry = _RETRY_S[0]
        bug_told = False
        while not self._closed:
            bug = False
            try:
                conn = self._connect()
                try:
                    self._listen(conn)
                finally:
                    self._version = None  # first of all: from now on every check reads
                    conn.close()
            except psycopg.Error as error:
                if not self._closed and not self._outage:  # once per outage, not per attempt
                    self._outage = True
                    log.warning("not listening for changes on %s (%s): every check reads"
                                " the database until listening again", self.channel, error)
            except Exception:  # a bug: said (once), and tried again, never any faster
                bug = True
                if not bug_told:
                    bug_told = True
                    log.warning("listening for changes on %s failed: every check reads the"
                                " database until listening again", self.channel,
                                exc_info=True)
            if self.backend_pid is not None and not bug:  # it did listen: a new outage
                retry = _RETRY_S[0]
            self.backend_pid = None
            if self._sleep(retry):
                return
            retry = min(retry * 2, _RETRY_S[1])

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        _listen_on(conn, self.channel)
        self._changed()  # from here on every change is notified: read what came before
        self.backend_pid = conn.info.backend_pid
        if self._outage:
            self._outage = False
            log.info("listening for changes on %s again", self.channel)
        seen = self.channel + SEEN_SUFFIX
        while not self._closed:
            tokens = [note.payload for note in conn.notifies(timeout=0)]
            if tokens:
                self._changed()
                for token in filter(None, tokens):
                    conn.execute("SELECT pg_notify(%s, %s)", [seen, token])
                continue  # more may have arrived meanwhile
            ready = _readable([conn.fileno(), self._wake.fileno()], HEARTBEAT_S)
            if self._wake.fileno() in ready:
                return
            if not ready:
                conn.execute("SELECT 1")

    def _sleep(self, seconds: float) -> bool:
        """Wait, or less if closed meanwhile: whether it was."""
        _readable([self._wake.fileno()], seconds)
        return self._closed


def _readable(fds: list[int], timeout: float) -> set[int]:
    """Those of ``fds`` ready to read within ``timeout`` seconds. Through a selector
    (epoll on Linux), not ``select.select``: a busy server's descriptors go past the
    1024 that select() takes."""
    with selectors.DefaultSelector() as selector:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        return {key.fd for key, _ in selector.select(timeout)}
