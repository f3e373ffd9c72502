"""Server-sent events in OpenAI's format, and stopping work on disconnect."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse

from starchart.errors import StarchartError

log = logging.getLogger("starchart.api")
T = TypeVar("T")


def _frame(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _sse(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    try:
        async for chunk in chunks:
            yield _frame(chunk)
    except StarchartError as exc:
        # Headers are gone already: the error travels as a data frame.
        yield _frame(exc.to_dict())
    except Exception:
        log.exception("error while streaming")
        yield _frame(StarchartError("internal server error (logged on the server)").to_dict())
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    yield "data: [DONE]\n\n"


def sse_response(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    # Starlette cancels this body iterator when the client disconnects; the
    # cancellation reaches the engine's worker through the generator's finally.
    return StreamingResponse(
        _sse(chunks),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client goes away first."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        return await task
    finally:
        watcher.cancel()
