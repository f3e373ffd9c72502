"""On PostgreSQL the server keeps the API keys in memory too, told of every change by
LISTEN/NOTIFY: a real PostgreSQL, real listener threads, `starchart keys` run as a
separate process, listener connections killed and the database restarted."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from starchart.api.app import create_app
from starchart.settings import Settings
from starchart.store import Store
from starchart.store import db as store_db
from starchart.store.db import Listener, listener_name
from starchart.store.keys import KeyCheck

from tests.postgres import PostgresServer
from tests.scripted_engine import scripted


def _until(condition: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Server:
    """What a server process holds for its key check: a store and a KeyCheck, plus a
    count of the times the check read the keys from the database."""

    def __init__(self, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
        self.settings = settings
        self.store = Store.open(settings)
        self.check = KeyCheck(self.store.keys)
        self.reads = 0
        read = self.store.keys.hashes

        def counted() -> Any:
            self.reads += 1
            return read()

        monkeypatch.setattr(self.store.keys, "hashes", counted)

    @property
    def listener(self) -> Listener:
        assert isinstance(self.check.watch, Listener)
        return self.check.watch

    def granted(self, presented: str | None) -> bool:
        return asyncio.run(self.check.check(presented)).granted

    def listen(self) -> None:
        """Start listening (the first check does) and wait until it is."""
        self.granted(None)
        _until(lambda: self.listener.listening)

    def elsewhere(self) -> Store:
        """The same database opened by another client, as `starchart keys` opens it."""
        return Store.open(self.settings)


@pytest.fixture
def server(postgres: PostgresServer, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    s = Server(Settings(home=tmp_path, database_url=postgres.new_database()), monkeypatch)
    yield s
    s.store.close()


def _listeners(url: str) -> list[int]:
    """The process ids of the database's listening connections."""
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        return [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = %s", [listener_name("starchart_keys")])]


def _terminate(url: str, pid: int) -> None:
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)


def _keys_cli(settings: Settings, *args: str) -> str:
    """`starchart keys ...` in a process of its own; its stdout."""
    done = subprocess.run([sys.executable, "-m", "starchart", "keys", *args,
                           "--home", str(settings.home),
                           "--database-url", str(settings.database_url)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_unchanged_keys_are_read_once_and_every_change_is_read_again(server: Server) -> None:
    with closing(server.elsewhere()) as other:
        _, secret = other.keys.create("a")
    server.listen()
    reads = server.reads
    assert server.granted(secret)  # the first check since listening reads the keys
    assert server.reads == reads + 1
    for presented in (secret, None, secret + "x", secret) * 10:
        assert server.granted(presented) == (presented == secret)
    assert server.reads == reads + 1  # decided from the keys in memory
    with closing(server.elsewhere()) as other:
        other.conversations.create(None, title="not a key: no reason to read them")
        assert server.granted(secret) and server.reads == reads + 1
        _, secret_b = other.keys.create("b")
    assert server.granted(secret_b) and server.reads == reads + 2
    assert server.granted(secret_b) and server.reads == reads + 2


def test_keys_made_and_revoked_by_the_keys_command_count_at_once_however_late_the_notification(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server.listen()
    assert server.granted(None)  # no keys: open, and that is in memory now
    # The listener thread takes 0.3 s to act on a notification (a loaded machine):
    # the command waits for it, so the very next check already knows.
    changed = server.listener._changed

    def late() -> None:
        time.sleep(0.3)
        changed()

    monkeypatch.setattr(server.listener, "_changed", late)
    secret = _keys_cli(server.settings, "create", "--name", "cli")
    assert not server.granted(None)  # the first key locks the server at once
    assert server.granted(secret)
    key_id = server.store.keys.list()[0].id
    started = time.monotonic()
    _keys_cli(server.settings, "revoke", key_id)
    assert not server.granted(secret)
    assert time.monotonic() - started > 0.3  # (the command did wait)
    # The same through the store in this process (another replica's writes).
    with closing(server.elsewhere()) as other:
        key, secret = other.keys.create("b")
        assert server.granted(secret)
        other.keys.revoke(key.id)
        assert not server.granted(secret)


def test_while_not_listening_every_check_reads_and_after_it_the_keys_are_read_again(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    with closing(server.elsewhere()) as other:
        key, secret = other.keys.create("a")
    server.listen()
    assert server.granted(secret)
    # The listening connection is killed, and reconnecting fails until allowed.
    allowed = threading.Event()
    connect = server.listener._connect

    def refused() -> psycopg.Connection[Any]:
        if not allowed.is_set():
            raise psycopg.OperationalError("refused by the test")
        return connect()

    monkeypatch.setattr(server.listener, "_connect", refused)
    assert server.listener.backend_pid is not None
    _terminate(str(server.settings.database_url), server.listener.backend_pid)
    _until(lambda: not server.listener.listening)
    reads = server.reads
    for _ in range(3):
        assert server.granted(secret)
    assert server.reads == reads + 3  # not listening: every check reads
    with closing(server.elsewhere()) as other:
        other.keys.revoke(key.id)  # no listener to tell
    assert not server.granted(secret)
    allowed.set()
    _until(lambda: server.listener.listening)
    reads = server.reads
    assert not server.granted(secret)  # listening again: what it kept is stale
    assert not server.granted(secret)
    assert server.reads == reads + 1  # and in memory again


def test_a_restarted_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    postgres = PostgresServer().start()  # its own: the restart must not touch other tests
    server = Server(Settings(home=tmp_path, database_url=postgres.new_database()), monkeypatch)
    try:
        with closing(server.elsewhere()) as other:
            key, secret = other.keys.create("a")
        server.listen()
        assert server.granted(secret)
        before = server.listener.backend_pid
        postgres.restart()  # the pooled connections die too: each is checked before use
        with closing(server.elsewhere()) as other:
            other.keys.revoke(key.id)
        assert not server.granted(secret)
        _until(lambda: server.listener.listening)
        assert server.listener.backend_pid != before
        assert not server.granted(secret)
        reads = server.reads
        with closing(server.elsewhere()) as other:
            _, secret_b = other.keys.create("b")
        for _ in range(5):
            assert server.granted(secret_b)
        assert server.reads == reads + 1  # back to the keys in memory
    finally:
        server.store.close()
        postgres.stop()


def _listener_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("starchart-listen")]


def test_closing_the_store_stops_the_listener_thread_and_its_connection(
        server: Server) -> None:
    others = _listener_threads()  # (none, unless a failed test left one)
    server.listen()
    url = str(server.settings.database_url)
    assert _listeners(url) == [server.listener.backend_pid]
    assert len(_listener_threads()) == len(others) + 1
    server.store.close()
    assert _listener_threads() == others
    _until(lambda: _listeners(url) == [], timeout=5)  # the server process ends after
    assert server.listener.version() is None  # closed: not listening, nor starting again


def test_the_server_listens_while_it_runs_and_stops_listening_with_it(
        postgres: PostgresServer, tmp_path: Path) -> None:
    others = _listener_threads()  # (none, unless a failed test left one)
    settings = Settings(home=tmp_path, database_url=postgres.new_database())
    app = create_app(settings, engines=[scripted("answer")])
    with closing(Store.open(settings)) as other:
        key, secret = other.keys.create("a")
    auth = {"Authorization": f"Bearer {secret}"}
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/v1/models", headers=auth).status_code == 200
        _until(lambda: len(_listeners(str(settings.database_url))) == 1)
        assert client.get("/v1/models", headers=auth).status_code == 200  # now in memory
        assert len(_listener_threads()) == len(others) + 1
        with closing(Store.open(settings)) as other:
            other.keys.revoke(key.id)
        assert client.get("/v1/models", headers=auth).status_code == 401
    assert _listener_threads() == others
    _until(lambda: _listeners(str(settings.database_url)) == [], timeout=5)


def test_a_write_waits_for_listeners_only_while_they_are_connected(
        server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = str(server.settings.database_url).replace("+psycopg", "")
    # Named as a listener, listening, and never confirming.
    silent = psycopg.connect(url, autocommit=True,
                             application_name=listener_name("starchart_keys"))
    silent.execute("LISTEN starchart_keys")
    monkeypatch.setattr(store_db, "CONFIRM_TIMEOUT_S", 0.5)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="starchart"):
        server.store.keys.create("a")
    assert 0.5 <= time.monotonic() - started < 15  # (gave up; a loaded machine is slow)
    assert str(silent.info.backend_pid) in caplog.text and "did not confirm" in caplog.text
    # One that goes away while the writer waits needs no confirmation.
    monkeypatch.setattr(store_db, "CONFIRM_TIMEOUT_S", 30.0)
    threading.Timer(0.3, silent.close).start()
    started = time.monotonic()
    server.store.keys.create("b")
    assert time.monotonic() - started < 15  # (not the 30 s timeout)


def test_a_key_revoked_by_hand_in_sql_counts_once_notified(server: Server) -> None:
    with closing(server.elsewhere()) as other:
        key, secret = other.keys.create("a")
    server.listen()
    assert server.granted(secret)
    with psycopg.connect(str(server.settings.database_url).replace("+psycopg", ""),
                         autocommit=True) as conn:
        conn.execute("UPDATE api_keys SET revoked_at = 1 WHERE id = %s", [key.id])
        assert server.granted(secret)  # the documented limit: no NOTIFY, no news
        conn.execute("NOTIFY starchart_keys")  # what the README says to send
    _until(lambda: not server.granted(secret), timeout=5)


def test_a_write_committed_just_as_a_server_starts_listening_reaches_it_before_returning(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # The listener is held just after it starts listening (its first version): the
    # server caches the keys then, and a key is made meanwhile. Once the write has
    # returned, the server's next check must know the key.
    listening, release = threading.Event(), threading.Event()
    changed = server.listener._changed

    def held() -> None:
        changed()
        if not listening.is_set():
            listening.set()
            release.wait(10)

    monkeypatch.setattr(server.listener, "_changed", held)
    server.granted(None)  # starts the listener
    assert listening.wait(10)
    assert server.granted(None)  # no keys: open, kept in memory at the first version
    after_write: list[bool] = []

    def write() -> None:
        with closing(server.elsewhere()) as other:
            other.keys.create("a")
        after_write.append(server.granted(None))

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(0.5)
    release.set()
    writer.join(30)
    assert after_write == [False]  # the first key locked the server by then


def test_a_server_connecting_as_a_key_is_written_is_sent_the_change_again(
        server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Connected (so counted by the writer) but not yet listening when the key commits:
    # it misses the transaction's NOTIFY; the writer sends it again.
    connect = server.listener._connect
    connected = threading.Event()

    def slow() -> psycopg.Connection[Any]:
        conn = connect()
        connected.set()
        time.sleep(0.5)
        return conn

    monkeypatch.setattr(server.listener, "_connect", slow)
    server.granted(None)  # starts the listener
    assert connected.wait(10)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="starchart"), \
            closing(server.elsewhere()) as other:
        other.keys.create("a")
    assert "did not confirm" not in caplog.text
    assert time.monotonic() - started < store_db.CONFIRM_TIMEOUT_S
    assert not server.granted(None)


@pytest.mark.parametrize("late", [0.0, 1.0], ids=["prompt", "late"])
def test_a_write_whose_wait_for_confirmations_breaks_is_still_made(
        server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        late: float) -> None:
    # "late": the writer reaches its wait a second later (a loaded machine).
    wait = store_db._await_confirmations

    def delayed(*args: Any) -> set[int]:
        time.sleep(late)
        return wait(*args)

    monkeypatch.setattr(store_db, "_await_confirmations", delayed)
    url = str(server.settings.database_url).replace("+psycopg", "")
    silent = psycopg.connect(url, autocommit=True,
                             application_name=listener_name("starchart_keys"))
    silent.execute("LISTEN starchart_keys")  # never confirms: the writer keeps waiting
    monkeypatch.setattr(store_db, "CONFIRM_TIMEOUT_S", 30.0)

    def end_the_writers_wait() -> None:
        # As soon as there is one, however long the writer takes to get there: the
        # waiting connection is idle after its count or its NOTIFY (the write's own
        # connection is in its transaction then, and its last statement is COMMIT after).
        deadline = time.monotonic() + 60
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < deadline and not conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND state = 'idle' AND (query LIKE 'SELECT pid FROM pg_stat_activity%'"
                    " OR query LIKE 'SELECT pg_notify(%')").fetchall():
                time.sleep(0.05)

    threading.Thread(target=end_the_writers_wait, daemon=True).start()
    with caplog.at_level(logging.WARNING, logger="starchart"), closing(silent):
        key, _ = server.store.keys.create("a")
    assert "could not wait" in caplog.text
    assert [k.id for k in server.store.keys.list()] == [key.id]


def test_a_listening_connection_past_descriptor_1024_still_listens(server: Server) -> None:
    # A busy server (a thousand clients connected, as its file limit allows) can give
    # the listener's connection a descriptor past the 1024 that select() handles.
    open_now = len(os.listdir("/proc/self/fd"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = open_now + 1200
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"this process may open only {hard} files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    padding = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with closing(server.elsewhere()) as other:
            key, secret = other.keys.create("a")
        server.listen()
        assert server.granted(secret)
        with closing(server.elsewhere()) as other:
            other.keys.revoke(key.id)
        assert not server.granted(secret)
        reads = server.reads
        assert not server.granted(secret) and server.reads == reads  # in memory
    finally:
        for fd in padding:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_listener_that_fails_unexpectedly_says_so_and_listens_again(
        server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Not a database error (a bug, a library's surprise): the thread must not end
    # silently, leaving every check to read the database for the server's life.
    listen = server.listener._listen
    failures = [RuntimeError("surprise")]

    def failing(conn: psycopg.Connection[Any]) -> None:
        if failures:
            raise failures.pop()
        listen(conn)

    monkeypatch.setattr(server.listener, "_listen", failing)
    with caplog.at_level(logging.WARNING, logger="starchart"):
        server.listen()
    assert "surprise" in caplog.text
    with closing(server.elsewhere()) as other:
        _, secret = other.keys.create("a")
    assert server.granted(secret)
    reads = server.reads
    assert server.granted(secret) and server.reads == reads  # in memory
