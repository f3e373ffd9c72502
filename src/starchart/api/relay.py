"""Chat and text completions for a remote model: the request passed through.

The client's JSON goes upstream as it came (every sampling field,
``response_format``, ``tools``, ``stream_options``, whatever the upstream
understands), with only ``model`` set to the upstream's name for it. Answers
come back with ``model`` set to ours; streamed events are relayed one by one
as they arrive. A stream that breaks after the first event ends with an error
event before ``[DONE]``, never silently short.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from starchart.api.protocol import ErrorResponse
from starchart.api.streaming import cancel_on_disconnect
from starchart.engines.remote import RemoteEngine, UpstreamStream
from starchart.errors import StarchartError
from starchart.services.chat import Stats

log = logging.getLogger("starchart.api")


# The first "model" member of an event is the top-level one (every OpenAI-style
# server writes it before "choices"; one inside a string would be escaped).
# Renaming in the text, not parse + dump, keeps the relay's per-token cost down.
_MODEL = re.compile(r'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


def _renamed(payload: str, model: str) -> str:
    return _MODEL.sub(lambda _: f'"model": {json.dumps(model)}', payload, count=1)


async def _frames(stream: UpstreamStream, model: str) -> AsyncIterator[str]:
    try:
        async for payload in stream.data():
            yield f"data: {_renamed(payload, model)}\n\n"
    except StarchartError as exc:
        log.warning("relayed stream of %s ended early: %s", model, exc.message)
        yield f"data: {ErrorResponse.of(exc).wire()}\n\n"
    finally:
        await stream.aclose()
    yield "data: [DONE]\n\n"


class _RelayedStream(StreamingResponse):
    """Closes the upstream stream however the response ends: a client gone before
    the body started never runs the generator's ``finally``."""

    def __init__(self, stream: UpstreamStream, model: str, stats: Stats) -> None:
        super().__init__(_frames(stream, model), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._stream = stream
        self._stats = stats

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stats.in_flight -= 1
            await self._stream.aclose()


async def relay(request: Request, engine: RemoteEngine, path: str, stats: Stats) -> Any:
    """The whole answer (JSON) or the relayed stream, for a remote model."""
    body: dict[str, Any] = await request.json()  # already validated by the route's model
    stats.requests += 1
    if not body.get("stream"):
        stats.in_flight += 1
        try:
            answer = await cancel_on_disconnect(request, engine.post_json(path, body))
        finally:
            stats.in_flight -= 1
        if isinstance(answer, dict):
            answer["model"] = engine.info.id
            usage = answer.get("usage") or {}
            stats.completion_tokens += int(usage.get("completion_tokens") or 0)
        return JSONResponse(answer)
    stats.in_flight += 1
    try:
        stream = await cancel_on_disconnect(request, engine.open_stream(path, body))
    except BaseException:
        stats.in_flight -= 1
        raise
    return _RelayedStream(stream, engine.info.id, stats)
