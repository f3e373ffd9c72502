"""Per-conversation locks: one turn at a time on a conversation, across replicas.

A turn (the user message, then the whole reply) must not interleave with
another turn on the same conversation, or the history reads user, user,
assistant and the second reply never saw the first. Two layers:

- In the process: an ``asyncio.Lock`` per conversation. Waiters queue in
  order and a waiter that goes away (client disconnect) just leaves the queue.
- Across processes, on PostgreSQL (several replicas on one database): the
  process's holder also takes a session-level advisory lock on a connection
  of its own, held for the turn.

Why an advisory lock and not ``SELECT ... FOR UPDATE`` on the conversation
row: a row lock lives inside a transaction, which would then stay open for
the whole reply (minutes, holding back vacuum), and the turn's own writes (the
user message, the periodic flushes of the reply; they touch the conversation
row too) go through other connections and would wait on that very lock. An
advisory lock is independent of rows and transactions: the turn's writes keep
their short transactions, and the lock lasts exactly as long as its session.
A replica killed mid-turn drops its connection and PostgreSQL releases the
lock, so the conversation is never left locked.

On SQLite the in-process lock is all there is (one server process owns the
file, as before).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# Waiting for another replica's turn: poll (cheap, and a waiter can leave at
# any moment) from POLL_FIRST seconds, doubling up to POLL_MAX.
POLL_FIRST = 0.01
POLL_MAX = 0.2


class KeyedLocks:
    """One ``asyncio.Lock`` per key, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


def advisory_key(conversation_id: str) -> int:
    """A signed 64-bit key (what ``pg_advisory_lock`` takes) for a conversation.

    A collision between two conversations only makes them wait for each other.
    """
    digest = hashlib.blake2b(f"starchart.conversation:{conversation_id}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _close_when_connected(connecting: asyncio.Future[Connection]) -> None:
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result().close()


class ConversationLocks:
    def __init__(self, engine: sa.Engine) -> None:
        self._local = KeyedLocks()
        # Its own engine without a pool: a lock's connection is opened for the
        # turn and closed after, and closing the session is what releases it.
        self._engine = (sa.create_engine(engine.url, poolclass=sa.NullPool,
                                         isolation_level="AUTOCOMMIT")
                        if engine.dialect.name == "postgresql" else None)

    @asynccontextmanager
    async def hold(self, conversation_id: str) -> AsyncIterator[None]:
        async with self._local.hold(conversation_id):
            if self._engine is None:
                yield
                return
            conn = await self._advisory(advisory_key(conversation_id))
            try:
                yield
            finally:
                conn.close()  # ends the session, so the lock with it

    async def _advisory(self, key: int) -> Connection:
        assert self._engine is not None
        connecting = asyncio.ensure_future(asyncio.to_thread(self._engine.connect))
        try:
            conn = await asyncio.shield(connecting)
        except asyncio.CancelledError:
            connecting.add_done_callback(_close_when_connected)
            raise
        delay = POLL_FIRST
        attempt: asyncio.Future[bool] | None = None
        try:
            while True:
                attempt = asyncio.ensure_future(asyncio.to_thread(
                    lambda: bool(conn.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"),
                                             {"k": key}))))
                if await asyncio.shield(attempt):
                    return conn
                await asyncio.sleep(delay)
                delay = min(delay * 2, POLL_MAX)
        except BaseException:
            if attempt is not None and not attempt.done():
                # A thread is still using the connection: close it once that
                # attempt is over (which releases the lock if it won).
                attempt.add_done_callback(lambda _: conn.close())
            else:
                conn.close()
            raise

    def __len__(self) -> int:
        return len(self._local)
