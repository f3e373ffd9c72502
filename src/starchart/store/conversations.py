"""Conversations and their messages: the repository.

Every read and write names an owner: the id of the API key the request came
with (``None`` when the server has no keys). A conversation owned by someone
else is reported exactly like one that does not exist. ``LOCAL`` is the
machine's own user (the terminal chat), who reads the database file anyway.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from starchart.errors import NotFound
from starchart.store.db import Database
from starchart.store.locks import ConversationLocks
from starchart.store.schema import conversations, messages

TITLE_CHARS = 80


class _Local(Enum):
    LOCAL = "local"


LOCAL = _Local.LOCAL
Owner = str | None | _Local


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass
class StoredMessage:
    id: str
    conversation_id: str
    seq: int
    role: str
    content: str
    created_at: float
    incomplete: bool = False
    finish_reason: str | None = None
    model: str | None = None
    params: dict[str, Any] | None = None
    usage: dict[str, int] | None = None
    dropped_turns: int | None = None
    timings: dict[str, float | None] | None = None
    tool_calls: list[dict[str, Any]] | None = None


@dataclass
class Conversation:
    id: str
    owner_key_id: str | None
    title: str | None
    system_prompt: str | None
    model: str | None
    created_at: float
    updated_at: float
    messages: list[StoredMessage] = field(default_factory=list)


def _not_found(conversation_id: str) -> NotFound:
    return NotFound(f"no conversation with id {conversation_id!r}", param="conversation_id")


def _owned(owner: Owner) -> sa.ColumnElement[bool]:
    if owner is LOCAL:
        return sa.true()
    if owner is None:
        return conversations.c.owner_key_id.is_(None)
    return conversations.c.owner_key_id == owner


def _conversation(row: sa.Row[Any]) -> Conversation:
    return Conversation(**{k: row._mapping[k] for k in (
        "id", "owner_key_id", "title", "system_prompt", "model", "created_at", "updated_at")})


def _message(row: sa.Row[Any]) -> StoredMessage:
    return StoredMessage(**dict(row._mapping))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _title_from(content: str) -> str:
    line = " ".join(content.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


class ConversationStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.locks = ConversationLocks(db.engine)

    @asynccontextmanager
    async def turn_lock(self, conversation_id: str) -> AsyncIterator[None]:
        """Hold the conversation for one turn: other turns on it, in this process
        or (on PostgreSQL) in any replica, wait until this one is over."""
        async with self.locks.hold(conversation_id):
            yield

    def create(self, owner: str | None, *, title: str | None = None,
               system_prompt: str | None = None, model: str | None = None,
               messages_: list[tuple[str, str]] | None = None) -> Conversation:
        """A new conversation; ``messages_`` (role, content) imports earlier turns."""
        now = time.time()
        conv = Conversation(id=_new_id("conv"), owner_key_id=owner, title=title,
                            system_prompt=system_prompt, model=model,
                            created_at=now, updated_at=now)
        conv.messages = [
            StoredMessage(id=_new_id("msg"), conversation_id=conv.id, seq=seq, role=role,
                          content=content, created_at=now)
            for seq, (role, content) in enumerate(messages_ or [], start=1)]
        with self.db.write() as conn:
            conn.execute(conversations.insert().values(
                id=conv.id, owner_key_id=owner, title=title, system_prompt=system_prompt,
                model=model, created_at=now, updated_at=now))
            for message in conv.messages:
                conn.execute(messages.insert().values(**message.__dict__))
        return conv

    def count(self) -> int:
        """Conversations stored, whoever owns them (for /metrics)."""
        with self.db.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(conversations))
                       .scalar_one())

    def list(self, owner: Owner, *, limit: int = 100, search: str | None = None,
             after: tuple[float, str] | None = None) -> list[Conversation]:
        """Most recently updated first; ``search`` keeps those whose title or any
        message contains it (case-insensitive); ``after`` (the ``updated_at`` and id
        of the last row of the previous page) starts past that row."""
        query = sa.select(conversations).where(_owned(owner))
        if after is not None:
            updated, last_id = after
            query = query.where(sa.or_(
                conversations.c.updated_at < updated,
                sa.and_(conversations.c.updated_at == updated, conversations.c.id < last_id)))
        if search:
            pattern = "%" + _escape_like(search.lower()) + "%"
            in_messages = sa.exists().where(
                messages.c.conversation_id == conversations.c.id,
                sa.func.lower(messages.c.content).like(pattern, escape="\\"))
            query = query.where(sa.or_(
                sa.func.lower(conversations.c.title).like(pattern, escape="\\"), in_messages))
        query = query.order_by(conversations.c.updated_at.desc(),
                               conversations.c.id.desc()).limit(limit)
        with self.db.read() as conn:
            return [_conversation(row) for row in conn.execute(query)]

    def _get(self, conn: Connection, conversation_id: str, owner: Owner, *,
             lock: bool = False) -> Conversation:
        query = sa.select(conversations).where(conversations.c.id == conversation_id,
                                               _owned(owner))
        # FOR UPDATE (PostgreSQL; SQLite's write transaction already excludes
        # other writers): two appends to one conversation must not both read
        # the same last seq.
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise _not_found(conversation_id)
        return _conversation(row)

    def get(self, conversation_id: str, owner: Owner, *,
            with_messages: bool = True) -> Conversation:
        with self.db.read() as conn:
            conv = self._get(conn, conversation_id, owner)
            if with_messages:
                rows = conn.execute(sa.select(messages)
                                    .where(messages.c.conversation_id == conversation_id)
                                    .order_by(messages.c.seq))
                conv.messages = [_message(row) for row in rows]
        return conv

    def update(self, conversation_id: str, owner: Owner, **changes: Any) -> Conversation:
        """Change ``title`` and/or ``system_prompt``."""
        allowed = {k: v for k, v in changes.items() if k in ("title", "system_prompt", "model")}
        with self.db.write() as conn:
            self._get(conn, conversation_id, owner)
            conn.execute(conversations.update()
                         .where(conversations.c.id == conversation_id)
                         .values(**allowed, updated_at=time.time()))
        return self.get(conversation_id, owner)

    def delete(self, conversation_id: str, owner: Owner) -> None:
        with self.db.write() as conn:
            self._get(conn, conversation_id, owner)
            # Explicit rather than trusting ON DELETE CASCADE: SQLite only honours
            # it with foreign_keys on, and other databases may be set up by hand.
            conn.execute(messages.delete().where(messages.c.conversation_id == conversation_id))
            conn.execute(conversations.delete().where(conversations.c.id == conversation_id))

    def add_message(self, conversation_id: str, owner: Owner, role: str, content: str, *,
                    incomplete: bool = False, model: str | None = None,
                    params: dict[str, Any] | None = None,
                    dropped_turns: int | None = None) -> StoredMessage:
        """Append a message, committed before this returns."""
        now = time.time()
        with self.db.write() as conn:
            conv = self._get(conn, conversation_id, owner, lock=True)
            seq = (conn.scalar(sa.select(sa.func.coalesce(sa.func.max(messages.c.seq), 0))
                               .where(messages.c.conversation_id == conversation_id)) or 0) + 1
            message = StoredMessage(
                id=_new_id("msg"), conversation_id=conversation_id, seq=seq, role=role,
                content=content, created_at=now, incomplete=incomplete, model=model,
                params=params, dropped_turns=dropped_turns)
            conn.execute(messages.insert().values(**message.__dict__))
            touched: dict[str, Any] = {"updated_at": now}
            if conv.title is None and role == "user":
                touched["title"] = _title_from(content)
            conn.execute(conversations.update()
                         .where(conversations.c.id == conversation_id).values(**touched))
        return message

    def delete_message(self, conversation_id: str, owner: Owner, message_id: str) -> None:
        """Remove one message (a reply being regenerated), committed before this returns."""
        with self.db.write() as conn:
            self._get(conn, conversation_id, owner)
            gone = conn.execute(messages.delete().where(messages.c.id == message_id)
                                .where(messages.c.conversation_id == conversation_id))
            if gone.rowcount == 0:
                raise NotFound(f"no message with id {message_id!r} in this conversation",
                               param="message_id")

    def delete_from(self, conversation_id: str, owner: Owner, message_id: str) -> None:
        """Remove a message and every later one (an edited turn is asked again)."""
        with self.db.write() as conn:
            self._get(conn, conversation_id, owner)
            seq = conn.scalar(sa.select(messages.c.seq).where(
                messages.c.id == message_id, messages.c.conversation_id == conversation_id))
            if seq is None:
                raise NotFound(f"no message with id {message_id!r} in this conversation",
                               param="message_id")
            conn.execute(messages.delete().where(messages.c.conversation_id == conversation_id,
                                                 messages.c.seq >= seq))

    def save_reply(self, message_id: str, content: str, *, incomplete: bool,
                   finish_reason: str | None = None,
                   usage: dict[str, int] | None = None,
                   timings: dict[str, float | None] | None = None,
                   tool_calls: Sequence[dict[str, Any]] | None = None) -> None:
        """Overwrite a reply's text (and, at the end, its outcome)."""
        with self.db.write() as conn:
            conn.execute(messages.update().where(messages.c.id == message_id).values(
                content=content, incomplete=incomplete, finish_reason=finish_reason,
                usage=usage, timings=timings, tool_calls=tool_calls))
            if finish_reason is not None:  # the turn is over: the conversation moved
                owner = (sa.select(messages.c.conversation_id)
                         .where(messages.c.id == message_id).scalar_subquery())
                conn.execute(conversations.update().where(conversations.c.id == owner)
                             .values(updated_at=time.time()))
