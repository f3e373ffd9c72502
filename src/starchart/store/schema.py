"""The tables as the code queries them: the schema the migrations build.

``migrations.py`` is the history (how a database got here); this is the
present. A test migrates an empty database and checks it has exactly these
columns, so the two cannot drift apart.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

conversations = sa.Table(
    "conversations", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    # The API key that created it; NULL when the server had no keys.
    sa.Column("owner_key_id", sa.String(40), nullable=True, index=True),
    sa.Column("title", sa.Text, nullable=True),
    sa.Column("system_prompt", sa.Text, nullable=True),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False, index=True),
)

messages = sa.Table(
    "messages", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("conversation_id", sa.String(40),
              sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # True while a reply is being written, and forever if it never finished.
    sa.Column("incomplete", sa.Boolean, nullable=False),
    sa.Column("finish_reason", sa.String(16), nullable=True),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("params", sa.JSON, nullable=True),
    sa.Column("usage", sa.JSON, nullable=True),
    sa.Column("dropped_turns", sa.Integer, nullable=True),
    # A reply's speed as the server measured it (time to first token, prompt
    # and decode tokens per second), kept for stopped replies too.
    sa.Column("timings", sa.JSON, nullable=True),
    # The tool calls a reply made (OpenAI's shape: id, type, function.name/arguments).
    sa.Column("tool_calls", sa.JSON, nullable=True),
    sa.UniqueConstraint("conversation_id", "seq"),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=True),
    # sha256 of the key: the key itself is shown once and never stored.
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
)
