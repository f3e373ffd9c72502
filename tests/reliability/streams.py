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
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    result.done = True
                    continue
                chunk = json.loads(data)
                if "error" in chunk:
                    result.error = chunk["error"]
                    continue
                for choice in chunk.get("choices") or []:
                    result.text += (choice.get("delta") or {}).get("content") or ""
                    result.finish_reason = choice.get("finish_reason") or result.finish_reason
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
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    result.done = True
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    result.error = chunk["error"]
                    continue
                for choice in chunk.get("choices") or []:
                    result.text += (choice.get("delta") or {}).get("content") or ""
                    result.finish_reason = choice.get("finish_reason") or result.finish_reason
    except httpx.HTTPError as exc:
        result.cut = f"{type(exc).__name__}: {exc}"
    finally:
        result.ended_at = time.monotonic()
    return result
