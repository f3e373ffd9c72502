"""Engine events -> OpenAI responses, for chat and text completions alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request

from starchart.api.protocol import new_id, now, usage_chunk
from starchart.api.streaming import cancel_on_disconnect, sse_response
from starchart.engines.base import Finish, StreamEvent, TextDelta
from starchart.service import Reply, collect


async def _chunks(events: AsyncIterator[StreamEvent], *, id_: str, created: int, model: str,
                  make: Callable[[str | None, str | None], dict[str, Any]],
                  first: dict[str, Any] | None, usage_object: str | None,
                  ) -> AsyncIterator[dict[str, Any]]:
    if first is not None:
        yield first
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                yield make(event.text, None)
            elif isinstance(event, Finish):
                yield make(None, event.reason)
                if usage_object is not None:
                    yield usage_chunk(id_, created, model, usage_object, event.usage.as_dict())
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def stream(events: AsyncIterator[StreamEvent], *, prefix: str, model: str,
           make: Callable[..., dict[str, Any]], object_name: str, include_usage: bool,
           first: Callable[..., dict[str, Any]] | None = None):  # -> StreamingResponse
    id_, created = new_id(prefix), now()

    def chunk(text: str | None, finish: str | None) -> dict[str, Any]:
        return make(id_, created, model, text, finish, include_usage)

    return sse_response(_chunks(
        events, id_=id_, created=created, model=model, make=chunk,
        first=first(id_, created, model, include_usage) if first else None,
        usage_object=object_name if include_usage else None,
    ))


async def complete(request: Request, events: AsyncIterator[StreamEvent]) -> Reply:
    return await cancel_on_disconnect(request, collect(events))
