"""Server-sent events in OpenAI's format, and stopping work on disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

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


class EventStream(StreamingResponse):
    """A server-sent event stream, streamed in the request's own task.

    Starlette streams a response in a task of its own when the server speaks ASGI
    below 2.4, as uvicorn does: a new task starts only after every request that
    woke with it has run up to its first wait, so the first event of each of a
    burst of streams waited for all the others. Here the events go out from the
    request's task, and a client that disconnects cancels it, as before: the
    cancellation reaches the engine (or the upstream) through the body
    iterator's ``finally``.
    """

    def __init__(self, content: AsyncIterator[str]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        left = False

        async def receiving() -> Message:
            nonlocal left
            message = await receive()
            left = left or message["type"] == "http.disconnect"
            return message

        async def sending(message: Message) -> None:
            # The cancellation is delivered once, and code that swallows it would go
            # on generating for nobody (uvicorn drops what is sent after a disconnect).
            if left:
                raise ClientLeft("the client closed the connection")
            await send(message)

        try:
            with contextlib.suppress(ClientLeft):  # nobody is left to tell
                await until_disconnect(receiving, self.stream_response(sending))
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:  # however it ended: the engine hears of it now
                await close()

    async def stream_response(self, send: Send) -> None:
        """Starlette's, except that the message carrying ``DONE`` also ends the body:
        the stream's last event and its end go out in one write."""
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            last = chunk == DONE
            await send({"type": "http.response.body", "more_body": not last,
                        "body": chunk.encode() if isinstance(chunk, str) else chunk})
            if last:
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def sse_response(chunks: AsyncIterator[WireModel]) -> EventStream:
    return EventStream(_sse(chunks))


async def until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work`` in the current task, at once; if the client disconnects first,
    cancel it and raise ``ClientLeft``.

    The current task, not a task of its own: a relayed request reaches its upstream
    before the event loop turns to the requests that came with it (a new task would
    start only after all of theirs had run up to their first wait).
    """
    current = asyncio.current_task()
    assert current is not None, "called from a request's task"
    left = False
    counted = False  # our cancellation, still counted on the task

    async def watch() -> None:
        nonlocal left, counted
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                left = counted = True
                current.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not left:
            raise  # this request itself is being cancelled (a cut, shutdown): not ours
        # Ours is caught; another cancellation counted with it (the drain's cut, as the
        # client left) goes on to whoever asked for it.
        counted = False
        if current.uncancel() > 0:
            raise
        raise ClientLeft("the client closed the connection before the answer was ready"
                         ) from None
    finally:
        watcher.cancel()
        if counted:  # the work swallowed it (or turned it into another error)
            current.uncancel()


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` (``until_disconnect``), cancelling it if the client goes away first.

    A client leaving is normal: one INFO line, and ``ClientLeft`` (a 499 nobody
    reads) instead of a cancellation traceback.
    """
    try:
        return await until_disconnect(request.receive, work)
    except ClientLeft:
        log.info("client left before the answer to %s %s was ready: generation stopped",
                 request.method, request.url.path)
        raise
