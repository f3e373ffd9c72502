"""Server-sent events in OpenAI's format, and stopping work on disconnect."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse

from starchart.api.protocol import ErrorResponse, WireModel
from starchart.errors import ClientLeft, StarchartError

log = logging.getLogger("starchart.api")
T = TypeVar("T")


def _frame(chunk: WireModel) -> str:
    # json.dumps' own spacing: the frames stay byte for byte what they always were.
    body = json.dumps(chunk.model_dump(mode="json", exclude_unset=True), ensure_ascii=False)
    return f"data: {body}\n\n"


DONE = "data: [DONE]\n\n"


def error_frame(exc: StarchartError) -> str:
    """An error after the headers are gone: it travels as a data frame (then ``DONE``)."""
    return _frame(ErrorResponse.of(exc))


async def _sse(chunks: AsyncIterator[WireModel]) -> AsyncIterator[str]:
    try:
        async for chunk in chunks:
            yield _frame(chunk)
    except StarchartError as exc:
        yield error_frame(exc)
    except Exception:
        log.exception("error while streaming")
        yield error_frame(StarchartError("internal server error (logged on the server)"))
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    yield DONE


def sse_response(chunks: AsyncIterator[WireModel]) -> StreamingResponse:
    # Starlette cancels this body iterator when the client disconnects; the
    # cancellation reaches the engine's worker through the generator's finally.
    return StreamingResponse(
        _sse(chunks),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client goes away first.

    ``work`` runs in the handler's own task, at once: a relayed request reaches
    its upstream before the event loop turns to the requests that came with it
    (a task of its own would start only after all of theirs had run up to their
    first wait). A client leaving is normal: one INFO line, and ``ClientLeft`` (a
    499 nobody reads) instead of a cancellation traceback.
    """
    handler = asyncio.current_task()
    assert handler is not None, "called from a request handler's task"
    left = False

    async def watch() -> None:
        nonlocal left
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                left = True
                handler.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not left or handler.cancelling() > 1:
            raise  # this handler itself is being cancelled (shutdown): not ours to absorb
        handler.uncancel()
        log.info("client left before the answer to %s %s was ready: generation stopped",
                 request.method, request.url.path)
        raise ClientLeft("the client closed the connection before the answer was ready"
                         ) from None
    finally:
        watcher.cancel()
