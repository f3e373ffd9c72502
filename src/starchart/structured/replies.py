"""A reply's text -> content or tool calls, as it streams.

A forced call (``tool_choice`` required or named) is read as it is generated:
its name as soon as it is complete, then its arguments in pieces. With
``auto`` the reply is held back while it may still be a call, and read as
calls (or released as text) at its end. A reply that made calls finishes
with ``"tool_calls"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

from starchart.engines.base import StreamEvent, TextDelta
from starchart.structured.request import StructuredRequest
from starchart.structured.tools import (
    ForcedCallReader,
    ToolCallDelta,
    could_be_call,
    deltas_from_calls,
    parse_tool_calls,
)

ReplyEvent = StreamEvent | ToolCallDelta


def _joined(held: list[TextDelta]) -> TextDelta:
    """Held-back pieces as one, keeping their token counts and logprobs."""
    return TextDelta("".join(d.text for d in held), tokens=sum(d.tokens for d in held),
                     logprobs=tuple(e for d in held for e in d.logprobs))


async def with_tool_calls(events: AsyncIterator[StreamEvent], structured: StructuredRequest
                          ) -> AsyncIterator[ReplyEvent]:
    reader = ForcedCallReader() if structured.forced_call else None
    held: list[TextDelta] = []
    holding = structured.offers_tools and not structured.forced_call  # "auto"
    made_calls = False
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                if reader is not None:
                    for delta in reader.feed(event.text):
                        made_calls = True
                        yield delta
                elif holding:
                    held.append(event)
                    if not could_be_call(_joined(held).text):
                        holding = False
                        yield _joined(held)
                        held.clear()
                else:
                    yield event
                continue
            if held:
                calls = parse_tool_calls(_joined(held).text, structured.tools)
                if not structured.parallel:
                    calls = calls[:1]
                if calls and event.reason == "stop":
                    made_calls = True
                    for delta in deltas_from_calls(calls):
                        yield delta
                else:
                    yield _joined(held)
            if made_calls and event.reason == "stop":
                event = dataclasses.replace(event, reason="tool_calls")
            yield event
    finally:
        await events.aclose()  # type: ignore[attr-defined]
