"""Reading an SSE answer the way a client does, and saying how it ended."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class StreamResult:
    status: int = 0
    text: str = ""
    finish_reason: str | None = None
    error: dict[str, Any] | None = None
    done: bool = False  # `data: [DONE]` seen
    cut: str | None = None  # the transport failed (connection reset, ...)
    first_chunk: threading.Event = field(default_factory=threading.Event)
    ended_at: float = 0.0
    body: str = ""  # a non-SSE answer (an error before the stream started)

    @property
    def complete(self) -> bool:
        """Ended as a client expects: a finish reason or an error event, then [DONE]."""
        return self.done and (self.finish_reason is not None or self.error is not None)

    def take(self, line: str) -> bool:
        """Read one line of the SSE body; True when it was a chunk of the answer."""
        if not line.startswith("data: "):
            return False
        data = line[6:]
        if data == "[DONE]":
            self.done = True
            return False
        chunk = json.loads(data)
        if "error" in chunk:
            self.error = chunk["error"]
            return False
        for choice in chunk.get("choices") or []:
            self.text += (choice.get("delta") or {}).get("content") or ""
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        return True


def read_stream(url: str, path: str, body: dict[str, Any], result: StreamResult | None = None,
                *, headers: dict[str, str] | None = None, timeout: float = 300
                ) -> StreamResult:
    result = result or StreamResult()
    try:
        with httpx.stream("POST", url + path, json={**body, "stream": True}, timeout=timeout,
                          headers=headers) as response:
            result.status = response.status_code
            if response.status_code != 200:
                result.body = response.read().decode()
                return result
            for line in response.iter_lines():
                if result.take(line):
                    result.first_chunk.set()
    except httpx.HTTPError as exc:
        result.cut = f"{type(exc).__name__}: {exc}"
    finally:
        result.ended_at = time.monotonic()
        result.first_chunk.set()
    return result


def stream_in_thread(url: str, path: str, body: dict[str, Any], **kwargs: Any
                     ) -> tuple[threading.Thread, StreamResult]:
    result = StreamResult()
    thread = threading.Thread(target=read_stream, args=(url, path, body, result), kwargs=kwargs,
                              daemon=True)
    thread.start()
    return thread, result


async def astream(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> StreamResult:
    """``read_stream`` for many concurrent clients on one event loop."""
    result = StreamResult()
    try:
        async with client.stream("POST", path, json={**body, "stream": True}) as response:
            result.status = response.status_code
            if response.status_code != 200:
                result.body = (await response.aread()).decode()
                return result
            async for line in response.aiter_lines():
                result.take(line)
    except httpx.HTTPError as exc:
        result.cut = f"{type(exc).__name__}: {exc}"
    finally:
        result.ended_at = time.monotonic()
    return result
