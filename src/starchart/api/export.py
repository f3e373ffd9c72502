"""A conversation as a file: JSON (everything) or Markdown (for reading)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from starchart.api.conversation_protocol import Conversation as WireConversation
from starchart.store.conversations import Conversation


def to_json(conv: Conversation) -> str:
    """What ``GET /v1/conversations/{id}`` answers, indented."""
    body = WireConversation.of(conv).model_dump(mode="json", exclude_unset=True)
    return json.dumps(body, ensure_ascii=False, indent=2)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _one_line(text: str) -> str:
    """Line breaks (CR, LF, U+2028, ...) and runs of spaces as one space: a title
    stays one heading line and cannot start headings of its own."""
    return " ".join(text.split())


def to_markdown(conv: Conversation) -> str:
    lines = [f"# {_one_line(conv.title or '') or 'Untitled conversation'}", ""]
    lines.append(f"*{conv.id} · started {_when(conv.created_at)}"
                 + (f" · model {_one_line(conv.model)}" if conv.model else "") + "*")
    lines.append("")
    if conv.system_prompt:
        lines += ["**System prompt:**", "", *(f"> {line}" for line in
                                              conv.system_prompt.splitlines()), ""]
    for message in conv.messages:
        heading = {"user": "User", "assistant": "Assistant"}.get(message.role, message.role)
        note = " *(incomplete)*" if message.incomplete else ""
        lines += [f"## {heading}{note}", "", message.content, ""]
    return "\n".join(lines).rstrip() + "\n"
