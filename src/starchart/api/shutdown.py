"""Graceful shutdown: refuse new work, let what runs finish, end what is left cleanly.

On the first SIGTERM (or Ctrl-C) ``server.py`` runs ``Drain.run()``:

1. Draining: every new HTTP request gets a 503 ``shutting_down`` with ``Retry-After``
   and new WebSockets are refused. The port stays open meanwhile, so a client gets
   that answer instead of a refused connection.
2. HTTP requests in flight (streams included) and WebSocket turns being generated
   have until shortly before ``--shutdown-timeout`` to finish on their own.
3. Whatever is left is cut: its task is cancelled (generation stops; a stored
   turn keeps its text, marked incomplete), then this middleware ends the answer
   the way a client understands: an SSE stream gets an error event and ``[DONE]``,
   a request not yet answered gets the 503, a WebSocket an error frame and close
   code 1012 (service restart).
4. uvicorn then stops; the app's lifespan stores the replies still being written.

A cut cancels the request's own task; this middleware catches that cancellation
(and only that one) and can still write to the connection. The app runs in the
same task, not one of its own: a task per request would start only after every
request that arrived with it had run up to its first wait, which delays a relayed
request's way upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starchart.api.conversation_protocol import WsError
from starchart.api.errors import error_response
from starchart.api.streaming import DONE, error_frame
from starchart.errors import ShuttingDown

log = logging.getLogger("starchart.shutdown")

# Streams still running this long before the deadline are cut (at most a quarter of it).
CUT_MARGIN = 1.0
POLL = 0.05


def _requests(n: int) -> str:
    return f"{n} request{'' if n == 1 else 's'}"


@dataclass(eq=False)
class _Connection:
    """One request or WebSocket, and what has been sent on it so far."""

    websocket: bool
    busy: bool  # an HTTP request always; a WebSocket while a turn is generated
    task: asyncio.Task[None] | None = None
    cut_requested: bool = False
    started: bool = False  # response headers sent / WebSocket accepted
    event_stream: bool = False
    finished: bool = False  # last body part sent / WebSocket closed

    def sent(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            headers = dict(message.get("headers") or [])
            self.event_stream = headers.get(b"content-type", b"").startswith(
                b"text/event-stream")
        elif kind == "http.response.body":
            self.finished = self.finished or not message.get("more_body", False)
        elif kind == "websocket.accept":
            self.started = True
        elif kind in ("websocket.close", "websocket.http.response.start"):
            self.finished = True

    def cut(self) -> None:
        self.cut_requested = True
        if self.task is not None:
            self.task.cancel()


_current: ContextVar[_Connection | None] = ContextVar("starchart_connection", default=None)


@contextlib.contextmanager
def busy() -> Iterator[None]:
    """Mark the current WebSocket busy (a turn is generated): shutdown waits for it."""
    connection = _current.get()
    if connection is None:
        yield
        return
    connection.busy = True
    try:
        yield
    finally:
        connection.busy = False


@dataclass
class Drain:
    timeout: float
    draining: bool = False
    deadline: float = 0.0
    connections: set[_Connection] = field(default_factory=set)

    @property
    def busy(self) -> int:
        return sum(1 for c in self.connections if c.busy)

    def error(self) -> ShuttingDown:
        left = max(1, math.ceil(self.deadline - time.monotonic()))
        return ShuttingDown("the server is shutting down: retry shortly (this server once it"
                            " is back, or another one)", retry_after=left)

    async def run(self) -> None:
        """Drain (see the module's docstring); returns when uvicorn may stop."""
        self.draining = True
        now = time.monotonic()
        self.deadline = now + self.timeout
        cut_at = self.deadline - min(CUT_MARGIN, self.timeout / 4)
        # The user who stopped the server sees what it waits for, and how that ended.
        in_flight = self.busy
        log.info("shutting down: %s in flight, up to %g s (--shutdown-timeout) to finish;"
                 " new ones get 503", _requests(in_flight), self.timeout)
        while self.busy and time.monotonic() < cut_at:
            await asyncio.sleep(POLL)
        left = self.busy
        if left:
            log.info("shutting down: --shutdown-timeout reached, %s cut (%d finished)",
                     _requests(left), max(0, in_flight - left))
        else:
            log.info("shutting down: every request finished, in %.1f s", time.monotonic() - now)
        for connection in list(self.connections):
            connection.cut()
        while self.connections and time.monotonic() < self.deadline:
            await asyncio.sleep(POLL)


class DrainMiddleware:
    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        websocket = scope["type"] == "websocket"
        if self.drain.draining:
            await self._refuse(websocket, scope, receive, send)
            return
        connection = _Connection(websocket=websocket, busy=not websocket)
        connection.task = handler = asyncio.current_task()
        assert handler is not None, "an ASGI app runs in a task"

        async def sending(message: Message) -> None:
            # Noted once sent: uvicorn waits for a slow client before it writes, and a
            # cut during that wait leaves the message unwritten (``_end`` still ends it).
            await send(message)
            connection.sent(message)

        token = _current.set(connection)
        self.drain.connections.add(connection)
        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            if not connection.cut_requested or handler.uncancel() > 0:
                raise  # not (only) the drain's cut: uvicorn's own shutdown, say
            await self._end(connection, scope, receive, send)
        finally:
            _current.reset(token)
            self.drain.connections.discard(connection)

    async def _refuse(self, websocket: bool, scope: Scope, receive: Receive,
                      send: Send) -> None:
        if websocket:
            await send({"type": "websocket.close", "code": 1012,
                        "reason": "the server is shutting down"})
            return
        response = error_response(self.drain.error())
        response.headers["Connection"] = "close"
        await response(scope, receive, send)

    async def _end(self, connection: _Connection, scope: Scope, receive: Receive,
                   send: Send) -> None:
        """Finish an answer whose work was cut, as its client expects an answer to end."""
        if connection.finished:
            return
        error = self.drain.error()
        with contextlib.suppress(OSError):  # the client left meanwhile
            if connection.websocket:
                if connection.started:
                    await send({"type": "websocket.send", "text": WsError.of(error).wire()})
                await send({"type": "websocket.close", "code": 1012,
                            "reason": "the server is shutting down"})
            elif not connection.started:
                await self._refuse(False, scope, receive, send)
            else:
                tail = (error_frame(error) + DONE).encode() if connection.event_stream else b""
                await send({"type": "http.response.body", "body": tail, "more_body": False})
