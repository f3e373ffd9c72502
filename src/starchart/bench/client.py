"""One streaming chat request, timed chunk by chunk, with its failure classified.

A request never raises: whatever the server does (refuses the connection,
answers 5xx, garbles SSE, cuts the stream, never answers) ends up as a
``Sample`` whose ``error`` names the kind, so a run always finishes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

# The kinds of failure a report counts (documented in report.schema.json).
ERROR_KINDS = {
    "connect": "could not connect (server down, refused, DNS)",
    "timeout": "no complete answer within the per-request timeout",
    "http_<status>": "answered with a non-200 status before streaming",
    "not_sse": "answered 200 but not with text/event-stream",
    "bad_sse": "a data frame that is not JSON or not a chat.completion.chunk",
    "stream_error": "the server sent an error object inside the stream",
    "truncated": "the connection dropped, or the stream ended with neither [DONE] nor a"
                 " finish_reason",
    "transport": "any other transport failure",
}

TokenSource = Literal["usage", "deltas"]


@dataclass
class Sample:
    """What one request did. Times are ``time.perf_counter()`` seconds."""

    sent: float
    ended: float = 0.0
    chunk_times: list[float] = field(default_factory=list)  # chunks carrying content
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    token_source: TokenSource | None = None
    error: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] - self.sent if self.chunk_times else None

    @property
    def inter_token(self) -> list[float]:
        t = self.chunk_times
        return [b - a for a, b in itertools.pairwise(t)]

    @property
    def decode_rate(self) -> float | None:
        """Tokens/s of this stream after its first token (prefill excluded)."""
        if self.completion_tokens is None or len(self.chunk_times) < 2:
            return None
        span = self.chunk_times[-1] - self.chunk_times[0]
        return (self.completion_tokens - 1) / span if span > 0 else None


class _Failed(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


def chat_body(model: str | None, messages: list[dict[str, str]], max_tokens: int,
              temperature: float) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
        "stream": True, "stream_options": {"include_usage": True},
    }
    if model is not None:
        body["model"] = model
    return body


def _error_message(raw: bytes) -> str:
    try:
        error = json.loads(raw)["error"]
        return str(error.get("message", error)) if isinstance(error, dict) else str(error)
    except (ValueError, KeyError, TypeError):
        return raw[:200].decode("utf-8", "replace")


async def _consume(response: httpx.Response, sample: Sample) -> None:
    if response.status_code != 200:
        raise _Failed(f"http_{response.status_code}", _error_message(await response.aread()))
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        raise _Failed("not_sse", f"content-type {response.headers.get('content-type')!r}")
    deltas = 0
    finished = False  # a finish_reason seen: a stream that then ends without [DONE] is
    # complete (transformers serve never sends [DONE]; the openai client accepts that)
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments, event: lines
        payload = line[5:].strip()
        if payload == "[DONE]":
            break
        try:
            chunk = json.loads(payload)
            if not isinstance(chunk, dict):
                raise ValueError("not an object")
            if "error" in chunk:
                raise _Failed("stream_error", _error_message(payload.encode()))
            choices = chunk.get("choices") or []
            usage = chunk.get("usage")
            contents = [c["delta"].get("content") for c in choices]
            finished = finished or any(c.get("finish_reason") for c in choices)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _Failed("bad_sse", f"{exc}: {payload[:120]!r}") from None
        if any(contents):
            sample.chunk_times.append(time.perf_counter())
            deltas += 1
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            sample.completion_tokens = usage["completion_tokens"]
            sample.prompt_tokens = usage.get("prompt_tokens")
            sample.token_source = "usage"
    else:
        if not finished:
            raise _Failed("truncated", f"the stream ended after {deltas} chunks with neither"
                          " [DONE] nor a finish_reason")
    if sample.token_source is None:
        sample.completion_tokens, sample.token_source = deltas, "deltas"


async def send(client: httpx.AsyncClient, url: str, body: dict[str, Any],
               timeout: float) -> Sample:
    """POST ``body`` to ``url`` (…/v1/chat/completions) and time the stream."""
    sample = Sample(sent=time.perf_counter())
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("POST", url, json=body) as response:
                await _consume(response, sample)
    except _Failed as exc:
        sample.error, sample.detail = exc.kind, exc.detail
    except TimeoutError:
        sample.error, sample.detail = "timeout", f"no complete answer within {timeout:g} s"
    except httpx.ConnectError as exc:
        sample.error, sample.detail = "connect", str(exc) or type(exc).__name__
    except httpx.TimeoutException:
        sample.error, sample.detail = "timeout", f"no complete answer within {timeout:g} s"
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        sample.error = "truncated"
        sample.detail = f"connection dropped mid-answer: {exc or type(exc).__name__}"
    except httpx.HTTPError as exc:
        sample.error, sample.detail = "transport", f"{type(exc).__name__}: {exc}"
    sample.ended = time.perf_counter()
    if sample.error is not None:
        sample.completion_tokens = sample.prompt_tokens = sample.token_source = None
    return sample
