"""One turn at a time per conversation: in a process, and across replicas on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa

from starchart.settings import Settings
from starchart.store import Store
from starchart.store.locks import KeyedLocks, advisory_key

from tests.postgres import PostgresServer


@pytest.fixture
def store(store_settings: Settings) -> Iterator[Store]:
    with closing(Store.open(store_settings)) as s:
        yield s


async def _hold(store: Store, conv_id: str, name: str, order: list[str],
                seconds: float = 0.1) -> None:
    async with store.conversations.turn_lock(conv_id):
        order.append(f"{name} in")
        await asyncio.sleep(seconds)
        order.append(f"{name} out")


def test_turn_lock_serialises_one_conversation_and_not_others(store: Store) -> None:
    order: list[str] = []

    async def go() -> None:
        await asyncio.gather(_hold(store, "conv_a", "a1", order, seconds=0.5),
                             _hold(store, "conv_a", "a2", order),
                             _hold(store, "conv_b", "b1", order))

    asyncio.run(go())
    assert order.index("a1 out") < order.index("a2 in")  # same conversation: in turn
    assert order.index("b1 in") < order.index("a1 out")  # another: side by side
    assert len(store.conversations.locks) == 0


def test_a_waiter_that_leaves_holds_nothing(store: Store) -> None:
    async def go() -> None:
        holder = asyncio.create_task(_hold(store, "conv_a", "a1", [], seconds=0.3))
        await asyncio.sleep(0.05)
        waiter = asyncio.create_task(_hold(store, "conv_a", "a2", []))
        await asyncio.sleep(0.05)
        waiter.cancel()
        await asyncio.gather(holder, waiter, return_exceptions=True)
        await asyncio.wait_for(_hold(store, "conv_a", "a3", [], seconds=0), 5)

    asyncio.run(go())
    assert len(store.conversations.locks) == 0


def test_keyed_locks_forget_keys_nobody_uses() -> None:
    async def go() -> KeyedLocks:
        locks = KeyedLocks()
        async with locks.hold("a"):
            assert len(locks) == 1
        return locks

    assert len(asyncio.run(go())) == 0


def test_two_stores_on_one_postgresql_exclude_each_other(
        postgres: PostgresServer, tmp_path: Path) -> None:
    """Two Store objects stand for two replicas: separate pools and in-process locks,
    one database. Only the advisory lock can make the second wait."""
    store_settings = Settings(home=tmp_path, database_url=postgres.new_database())
    order: list[str] = []
    with closing(Store.open(store_settings)) as a, closing(Store.open(store_settings)) as b:
        async def go() -> None:
            # Held long enough for "other" to connect even on a busy machine.
            first = asyncio.create_task(_hold(a, "conv_x", "A", order, seconds=1.5))
            await asyncio.sleep(0.1)
            await asyncio.gather(first, _hold(b, "conv_x", "B", order),
                                 _hold(b, "conv_y", "other", order))

        asyncio.run(go())
        assert order.index("A out") < order.index("B in")
        assert order.index("other in") < order.index("A out")
        # Released for good: nobody holds an advisory lock any more.
        with a.db.read() as conn:
            held = conn.scalar(sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"))
        assert held == 0


def test_advisory_keys_are_stable_signed_64_bit() -> None:
    key = advisory_key("conv_0123")
    assert key == advisory_key("conv_0123") != advisory_key("conv_0124")
    assert -(2**63) <= key < 2**63
