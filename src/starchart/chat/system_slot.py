"""The system prompt for templates that have no place for it.

Some chat templates refuse a system turn (``raise_exception``) or silently
drop it. The system prompt must still reach the model, so for those the
system text goes in front of the first user turn, separated by a blank line.
"""

from __future__ import annotations

from collections.abc import Sequence

from starchart.chat.templates import ChatTemplate, Message
from starchart.errors import BadRequest

_PROBE = "starchart-system-probe-7f3a"


def has_system_slot(template: ChatTemplate) -> bool:
    """Whether ``template`` renders a system turn's text."""
    try:
        rendered = template.render([{"role": "system", "content": _PROBE},
                                    {"role": "user", "content": "u"}])
    except BadRequest:
        return False
    return _PROBE in rendered


def fold_system(messages: Sequence[Message]) -> list[Message]:
    """Move system turns into the first user turn: "<system>\\n\\n<user>"."""
    system = "\n\n".join(m["content"] for m in messages
                         if m.get("role") == "system" and m.get("content"))
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    if not system:
        return rest
    for message in rest:
        if message.get("role") == "user":
            message["content"] = f"{system}\n\n{message['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]
