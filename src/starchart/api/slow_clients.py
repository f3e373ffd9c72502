"""Slow clients: a client that stops reading an answer is dropped after ``send_timeout``.

What the server writes waits in a bounded buffer (uvicorn's transport pauses the app
above 64 KiB, plus the kernel's socket buffers); once it is full, sending the next
part of the answer waits for the client to read. A client that reads nothing for
``send_timeout`` seconds is cut off: its connection is aborted, which the app sees as
the client leaving (generation stops, its slot frees), so it can neither hold a
sequence slot for ever nor make the server keep its answer in memory.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("starchart.api")


def _transport(receive: Receive) -> Any:
    """The connection's transport, where the server exposes it (uvicorn's request
    cycle does, as ``receive.__self__.transport``); None elsewhere."""
    return getattr(getattr(receive, "__self__", None), "transport", None)


class SendTimeout:
    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = _transport(receive) if scope["type"] == "http" else None
        if transport is None:
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        path = scope.get("path", "")

        def drop() -> None:
            log.info("%s: the client read nothing for %g s; connection dropped", path,
                     self.timeout)
            transport.abort()  # uvicorn sees the client leave; the blocked send returns

        async def sending(message: Message) -> None:
            timer = loop.call_later(self.timeout, drop)
            try:
                await send(message)
            finally:
                timer.cancel()

        await self.app(scope, receive, sending)
