"""API keys: shown once, stored as a hash, checked in constant time."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from starchart.errors import NotFound
from starchart.settings import Settings
from starchart.store import Store
from starchart.store.keys import KEY_PREFIX, Access, KeyCheck, key_hash

from tests.postgres import PostgresServer


@pytest.fixture
def store(store_settings: Settings) -> Store:
    s = Store.open(store_settings)
    yield s
    s.close()


@pytest.fixture
def check(store: Store) -> Callable[[str | None], Access]:
    """The server's key check (as every request makes it) on the store."""
    keys = KeyCheck(store.keys)
    return lambda presented: asyncio.run(keys.check(presented))


def _stored_bytes(store: Store, postgres: PostgresServer) -> bytes:
    """Everything the database holds: the SQLite files, or a pg_dump of the database."""
    if store.db.is_sqlite:
        return b"".join(p.read_bytes() for p in Path(store.db.engine.url.database).parent
                        .glob("starchart.db*"))
    url = store.db.engine.url
    return subprocess.run([str(postgres.bindir / "pg_dump"), "-h", url.host, "-p",
                           str(url.port), "-U", url.username, url.database],
                          check=True, capture_output=True).stdout


def test_no_keys_means_open_access(check: Callable[[str | None], Access]) -> None:
    access = check(None)
    assert not access.required and access.granted and access.key_id is None


def test_a_key_works_and_nothing_else_does(store: Store,
                                          check: Callable[[str | None], Access]) -> None:
    key, secret = store.keys.create("laptop")
    assert secret.startswith(KEY_PREFIX) and len(secret) > 40
    assert check(secret).key_id == key.id
    for wrong in (None, "", secret[:-1], secret + "x", key.prefix, key_hash(secret)):
        access = check(wrong)
        assert access.required and not access.granted


def test_two_keys_are_told_apart(store: Store, check: Callable[[str | None], Access]) -> None:
    a, secret_a = store.keys.create("a")
    b, secret_b = store.keys.create("b")
    assert check(secret_a).key_id == a.id
    assert check(secret_b).key_id == b.id


def test_revoked_key_is_refused_and_revoking_all_keys_keeps_the_server_locked(
        store: Store, check: Callable[[str | None], Access]) -> None:
    key, secret = store.keys.create()
    assert check(secret).granted
    revoked = store.keys.revoke(key.id)
    assert revoked.revoked
    assert store.keys.revoke(key.id).revoked_at == revoked.revoked_at  # idempotent
    access = check(secret)
    assert access.required and not access.granted
    with pytest.raises(NotFound):
        store.keys.revoke("key_missing")


def test_only_the_hash_reaches_the_database(store: Store, postgres: PostgresServer) -> None:
    key, secret = store.keys.create("x")
    store.close()
    raw = _stored_bytes(store, postgres)
    assert secret.encode() not in raw
    assert secret[len(KEY_PREFIX):].encode() not in raw
    assert key_hash(secret).encode() in raw
    listed = [k.as_dict() for k in store.keys.list()]
    assert listed[0]["prefix"] == key.prefix and secret not in str(listed)


def test_the_servers_key_check_sees_keys_made_and_revoked_elsewhere_at_once(
        store: Store, store_settings: Settings) -> None:
    check = KeyCheck(store.keys)
    assert asyncio.run(check.check(None)).granted  # no keys: open
    with closing(Store.open(store_settings)) as other:  # as `starchart keys` would
        key, secret = other.keys.create("elsewhere")
    assert not asyncio.run(check.check(None)).granted  # the first key locks at once
    assert asyncio.run(check.check(secret)).key_id == key.id
    with closing(Store.open(store_settings)) as other:
        other.keys.revoke(key.id)
    assert not asyncio.run(check.check(secret)).granted


def test_the_key_check_reads_an_unchanged_sqlite_database_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with closing(Store.open(Settings(home=tmp_path))) as store:
        key, secret = store.keys.create("a")
        check = KeyCheck(store.keys)
        assert asyncio.run(check.check(secret)).key_id == key.id
        reads: list[int] = []
        read = store.keys.hashes
        monkeypatch.setattr(store.keys, "hashes", lambda: reads.append(1) or read())
        for presented in (secret, None, secret + "x", secret):
            assert asyncio.run(check.check(presented)).granted == (presented == secret)
        assert reads == []  # decided from the keys read before
        store.conversations.create(None, title="any commit")
        assert asyncio.run(check.check(secret)).key_id == key.id
        assert reads == [1]  # the database changed: read again
