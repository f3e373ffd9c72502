"""Named, versioned schema migrations.

Each migration is a function registered in order; the names of those applied
are kept in the ``_migrations`` table, so opening a database applies exactly
the ones it has not seen. A migration is never edited once released: a schema
change is a new function at the end. All pending migrations run in one write
transaction, so two processes opening the same new database do not both
apply them (SQLite and PostgreSQL both have transactional DDL).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from starchart.store.db import Database

# The advisory lock key PostgreSQL migrations hold ("starchar" in ASCII).
_MIGRATION_LOCK = 0x7374617263686172
Migration = Callable[[Connection], None]
MIGRATIONS: list[tuple[str, Migration]] = []

_applied = sa.Table(
    "_migrations", sa.MetaData(),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("applied_at", sa.Float, nullable=False),
)


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


def migrate(db: Database) -> list[str]:
    """Apply pending migrations; return the names applied now."""
    with db.write() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas starting together on a new database: one migrates, the
            # others wait here and then find nothing left to do. (SQLite's
            # write transaction already holds the whole file.)
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        _applied.create(conn, checkfirst=True)
        done = set(conn.scalars(sa.select(_applied.c.name)))
        ran = []
        for name, fn in MIGRATIONS:
            if name in done:
                continue
            fn(conn)
            conn.execute(_applied.insert().values(name=name, applied_at=time.time()))
            ran.append(name)
    return ran


def applied(db: Database) -> list[str]:
    with db.read() as conn:
        return list(conn.scalars(sa.select(_applied.c.name).order_by(_applied.c.applied_at)))


@migration
def m001_conversations(conn: Connection) -> None:
    md = sa.MetaData()
    sa.Table(
        "conversations", md,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_key_id", sa.String(40), nullable=True, index=True),
        sa.Column("title", sa.Text, nullable=True),
        sa.Column("system_prompt", sa.Text, nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False, index=True),
    )
    sa.Table(
        "messages", md,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("conversation_id", sa.String(40),
                  sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("incomplete", sa.Boolean, nullable=False),
        sa.Column("finish_reason", sa.String(16), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("params", sa.JSON, nullable=True),
        sa.Column("usage", sa.JSON, nullable=True),
        sa.Column("dropped_turns", sa.Integer, nullable=True),
        sa.UniqueConstraint("conversation_id", "seq"),
    )
    md.create_all(conn)


@migration
def m002_api_keys(conn: Connection) -> None:
    md = sa.MetaData()
    sa.Table(
        "api_keys", md,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )
    md.create_all(conn)



@migration
def m003_message_timings(conn: Connection) -> None:
    conn.execute(sa.text("ALTER TABLE messages ADD COLUMN timings JSON"))


@migration
def m004_message_tool_calls(conn: Connection) -> None:
    conn.execute(sa.text("ALTER TABLE messages ADD COLUMN tool_calls JSON"))
