"""The database layer: migrations, SQLite settings, keys at rest."""

from __future__ import annotations

import threading
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa

from starchart.settings import Settings
from starchart.store import Store
from starchart.store.conversations import LOCAL, ConversationStore
from starchart.store.db import Database, database_url
from starchart.store.migrations import MIGRATIONS, applied, migrate
from starchart.store.schema import metadata

from tests.postgres import PostgresServer


@pytest.fixture
def store(store_settings: Settings) -> Store:
    s = Store.open(store_settings)
    yield s
    s.close()


def test_migrations_build_exactly_the_schema_the_code_queries(store: Store) -> None:
    inspector = sa.inspect(store.db.engine)
    for table in metadata.sorted_tables:
        columns = {c["name"]: c for c in inspector.get_columns(table.name)}
        assert set(columns) == {c.name for c in table.columns}, table.name
        for column in table.columns:
            assert columns[column.name]["nullable"] == column.nullable, (table.name, column)
    assert inspector.get_unique_constraints("messages")[0]["column_names"] == [
        "conversation_id", "seq"]
    assert applied(store.db) == [name for name, _ in MIGRATIONS]


def test_migrating_again_applies_nothing_and_keeps_data(store: Store) -> None:
    conv = store.conversations.create(None, title="kept")
    assert migrate(store.db) == []
    reopened = Database(store.db.url)
    assert migrate(reopened) == []
    assert ConversationStore(reopened).get(conv.id, None).title == "kept"
    reopened.close()


def test_only_new_migrations_run_on_an_old_database(store_settings: Settings) -> None:
    store_settings.home.mkdir(parents=True)
    db = Database(database_url(store_settings))
    every = list(MIGRATIONS)
    try:
        MIGRATIONS[:] = every[:1]  # a database made by an older release
        assert migrate(db) == [every[0][0]]
    finally:
        MIGRATIONS[:] = every
    assert migrate(db) == [name for name, _ in MIGRATIONS[1:]]
    assert "api_keys" in sa.inspect(db.engine).get_table_names()
    db.close()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    store = Store.open(Settings(home=tmp_path))
    with store.db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.close()


def test_default_database_is_a_file_in_home_and_the_url_setting_overrides(
        tmp_path: Path) -> None:
    assert database_url(Settings(home=tmp_path)) == f"sqlite:///{tmp_path / 'starchart.db'}"
    other = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    store = Store.open(Settings(home=tmp_path / "unused", database_url=other))
    store.conversations.create(None)
    store.close()
    assert (tmp_path / "elsewhere.db").exists() and not (tmp_path / "unused").exists()


def test_concurrent_writers_queue_instead_of_failing(store: Store) -> None:
    """Read-then-write transactions from many threads: with a deferred BEGIN
    some would fail at once with 'database is locked'."""
    convs = [store.conversations.create(None) for _ in range(8)]
    errors: list[BaseException] = []

    def write(conv_id: str) -> None:
        try:
            for i in range(10):
                store.conversations.add_message(conv_id, None, "user", f"m{i}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(c.id,)) for c in convs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for conv in convs:
        got = store.conversations.get(conv.id, None).messages
        assert [m.content for m in got] == [f"m{i}" for i in range(10)]
        assert [m.seq for m in got] == list(range(1, 11))


def test_conversations_are_scoped_to_their_owner(store: Store) -> None:
    mine = store.conversations.create("key_a")
    store.conversations.create("key_b")
    store.conversations.create(None)
    assert [c.id for c in store.conversations.list("key_a")] == [mine.id]
    assert len(store.conversations.list(LOCAL)) == 3
    with pytest.raises(Exception) as wrong_owner:
        store.conversations.get(mine.id, "key_b")
    with pytest.raises(Exception) as missing:
        store.conversations.get("conv_nope", "key_b")
    assert wrong_owner.value.status == missing.value.status == 404
    assert wrong_owner.value.message.replace(mine.id, "X") == \
        missing.value.message.replace("conv_nope", "X")


def test_deleting_a_conversation_deletes_its_messages(store: Store) -> None:
    conv = store.conversations.create(None)
    store.conversations.add_message(conv.id, None, "user", "hello")
    store.conversations.delete(conv.id, None)
    with store.db.read() as conn:
        assert conn.scalar(sa.text("select count(*) from messages")) == 0


def test_a_restarted_postgresql_costs_no_failed_request(tmp_path: Path) -> None:
    """Every pooled connection dies with the database server; the first use of each
    after a restart must still work (it is checked before use), not fail once."""
    postgres = PostgresServer().start()  # its own: the restart must not touch other tests
    try:
        with closing(Store.open(Settings(home=tmp_path,
                                         database_url=postgres.new_database()))) as store:
            made = [store.conversations.create(LOCAL, title=f"c{i}").id for i in range(3)]
            # Three connections in the pool, all open when the server goes away.
            with store.db.read() as a, store.db.read() as b, store.db.read() as c:
                for conn in (a, b, c):
                    conn.exec_driver_sql("SELECT 1")
            postgres.restart()
            for _ in range(3):
                assert {c.id for c in store.conversations.list(LOCAL)} == set(made)
    finally:
        postgres.stop()
