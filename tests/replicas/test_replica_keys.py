"""Two `starchart serve` processes on one PostgreSQL keep the API keys in memory: a key
made or revoked by `starchart keys --database-url ...` counts on the next request to
either, and a stopped server leaves no listening connection behind."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from starchart.store.db import listener_name

from tests.e2e.test_store_durability import ServeProcess
from tests.postgres import PostgresServer, postgres  # noqa: F401 - the session's server
from tests.replicas.replicas import two_replicas


def _listeners(url: str) -> int:
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname ="
                           " current_database() AND application_name = %s",
                           [listener_name("starchart_keys")]).fetchone()
    assert row is not None
    return int(row[0])


def _keys(home: Path, url: str, *args: str) -> str:
    """`starchart keys ...`, a process of its own; its stdout."""
    done = subprocess.run([sys.executable, "-m", "starchart", "keys", *args, "--home",
                           str(home), "--database-url", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def pair(postgres: PostgresServer, tmp_path: Path  # noqa: F811
         ) -> Iterator[tuple[str, list[ServeProcess]]]:
    url = postgres.new_database()
    with two_replicas(url, tmp_path) as servers:
        yield url, list(servers)


def _status(server: ServeProcess, secret: str | None) -> int:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.get(server.url + "/v1/models", headers=headers, timeout=30).status_code


def test_keys_from_the_keys_command_count_at_once_and_a_stopped_server_stops_listening(
        pair: tuple[str, list[ServeProcess]], tmp_path: Path) -> None:
    url, servers = pair
    for s in servers:
        for _ in range(3):  # no keys: open, and from memory once listening
            assert _status(s, None) == 200
    deadline = time.monotonic() + 15
    while _listeners(url) < 2:  # each listens from its first key check on
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for s in servers:
        assert _status(s, None) == 200  # the keys (none) are in memory now
    secret = _keys(tmp_path, url, "create", "--name", "cli")
    for s in servers:
        assert _status(s, None) == 401
        assert _status(s, secret) == 200
    key_id = _keys(tmp_path, url, "list").split("\t")[0]
    _keys(tmp_path, url, "revoke", key_id)
    for s in servers:
        assert _status(s, secret) == 401
    for s in servers:
        s.stop()
        assert s.proc is not None and s.proc.returncode == 0
    deadline = time.monotonic() + 5  # (a backend ends just after its client hangs up)
    while _listeners(url):
        assert time.monotonic() < deadline
        time.sleep(0.05)
