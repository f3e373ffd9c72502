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
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from starchart.api.protocol import ErrorResponse
from starchart.api.relay_order import end_turn
from starchart.api.streaming import DONE, EventStream, cancel_on_disconnect
from starchart.engines.remote import RemoteEngine, UpstreamStream
from starchart.errors import StarchartError
from starchart.services.chat import ChatService
from starchart.services.usage import charge

log = logging.getLogger("starchart.api")


# The first "model" member of an event is the top-level one (every OpenAI-style
# server writes it before "choices"; one inside a string would be escaped).
# Renaming in the text, not parse + dump, keeps the relay's per-token cost down.
_MODEL = re.compile(r'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


def _renamed(payload: str, model: str) -> str:
    return _MODEL.sub(lambda _: f'"model": {json.dumps(model)}', payload, count=1)


class _Meter:
    """Counts one relayed answer as a local generation is counted: ``/v1/stats``
    (the service's Stats) and ``/metrics`` (tokens, TTFT, inter-token latency,
    duration, outcome). Tokens come from the upstream's usage; without one, each
    streamed piece of text counts as a token."""

    def __init__(self, service: ChatService, model: str) -> None:
        self.stats = service.stats
        self.generation = None if service.metrics is None else service.metrics.generation(model)
        self.usage: dict[str, Any] = {}
        self.pieces = 0
        self.first: float | None = None  # decode speed counts from the first text
        self.error = False
        self.counted = False  # the upstream's answer ended and its tokens were counted
        self.ended = False
        self.stats.requests += 1
        self.stats.in_flight += 1

    def payload(self, payload: str) -> None:
        """One streamed event of the upstream's."""
        try:
            chunk = json.loads(payload)
        except ValueError:
            return
        if not isinstance(chunk, dict):
            return
        if "error" in chunk:  # the upstream's own mid-stream error event
            self.failed()
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        generation = self.generation
        if generation is not None:
            generation.started()
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if choice.get("text") or delta.get("content") or delta.get("tool_calls"):
                self.pieces += 1
                if self.first is None:
                    self.first = time.perf_counter()
                if generation is not None:
                    generation.text()

    def answered(self, answer: dict[str, Any]) -> None:
        """The upstream's whole (non-streamed) answer."""
        if isinstance(answer.get("usage"), dict):
            self.usage = answer["usage"]
        self.done()

    def done(self) -> None:
        """The upstream finished its answer."""
        if self.error:
            return
        self.counted = True
        completion = int(self.usage.get("completion_tokens") or self.pieces)
        self.stats.completion_tokens += completion
        charge(int(self.usage.get("prompt_tokens") or 0) + completion)  # per-key rate limit
        if self.first is not None and completion > 1:
            elapsed = time.perf_counter() - self.first
            if elapsed > 0:
                self.stats.last_tokens_per_second = (completion - 1) / elapsed
        if self.generation is not None:
            self.generation.finished(int(self.usage.get("prompt_tokens") or 0), completion)

    def failed(self) -> None:
        self.error = True
        if self.generation is not None:
            self.generation.outcome = "error"

    def end(self) -> None:
        """However the request ended (idempotent)."""
        if not self.ended:
            self.ended = True
            self.stats.in_flight -= 1
            if not self.counted:  # cancelled or failed: what was relayed still counts
                self.stats.completion_tokens += self.pieces
                charge(self.pieces)
            if self.generation is not None:
                self.generation.end()


async def _frames(stream: UpstreamStream, model: str, meter: _Meter) -> AsyncIterator[str]:
    try:
        async for payload in stream.data():
            meter.payload(payload)
            payload = _renamed(payload, model)
            if "\n" in payload:  # an event in several data lines goes on in as many
                payload = payload.replace("\n", "\ndata: ")
            yield f"data: {payload}\n\n"
        meter.done()
    except StarchartError as exc:
        log.warning("relayed stream of %s ended early: %s", model, exc.message)
        meter.failed()
        yield f"data: {ErrorResponse.of(exc).wire()}\n\n"
    finally:
        await stream.aclose()
    yield DONE


class _RelayedStream(EventStream):
    """Closes the upstream stream however the response ends: a client gone before
    the body started never runs the generator's ``finally``."""

    def __init__(self, stream: UpstreamStream, model: str, meter: _Meter) -> None:
        super().__init__(_frames(stream, model, meter))
        self._stream = stream
        self._meter = meter

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._meter.end()
            await self._stream.aclose()


async def relay(request: Request, engine: RemoteEngine, path: str,
                service: ChatService) -> Response:
    """The whole answer (JSON) or the relayed stream, for a remote model."""
    body: dict[str, Any] = await request.json()  # already validated by the route's model
    meter = _Meter(service, engine.info.id)
    if not body.get("stream"):
        try:
            answer = await cancel_on_disconnect(
                request, engine.post_json(path, body, on_sent=end_turn))
            if isinstance(answer, dict):
                answer["model"] = engine.info.id
                meter.answered(answer)
        except StarchartError:
            meter.failed()
            raise
        finally:
            meter.end()
        return JSONResponse(answer)
    try:
        stream = await cancel_on_disconnect(
            request, engine.open_stream(path, body, on_sent=end_turn))
    except BaseException as exc:
        if isinstance(exc, StarchartError):
            meter.failed()
        meter.end()
        raise
    return _RelayedStream(stream, engine.info.id, meter)
