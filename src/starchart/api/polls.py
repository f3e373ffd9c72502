"""The web page's timed re-reads are logged at DEBUG, not in the INFO access log.

An open chat tab reads ``GET /v1/models`` every 5 s (the model picker follows loads
and unloads) and the status page reads ``/v1/stats`` and ``/v1/models`` every 2 s:
at INFO, one access-log line each time, for as long as a tab stays open. The page
marks those reads with the header ``X-Starchart-Poll: 1``; this middleware notes
a marked request, and the filter ``server.py`` puts on uvicorn's access log turns
its line into a DEBUG line (shown with ``--log-level debug``, dropped otherwise).

Only a successful ``GET`` of a path the page polls is quieted: a client that sends
the header elsewhere, or is refused (401, 429, ...), is logged as every request is.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

POLL_HEADER = "x-starchart-poll"
POLLED = frozenset({"/v1/models", "/v1/stats"})
ACCESS_LOGGER = "uvicorn.access"

# uvicorn writes the access line inside the ``send`` of the response's start, in
# the context of the request's task: set just before that call, it is seen there.
_quiet: ContextVar[bool] = ContextVar("starchart_quiet_poll", default=False)


def _marked(scope: Scope) -> bool:
    return (scope["type"] == "http" and scope["method"] == "GET"
            and scope["path"] in POLLED
            and (POLL_HEADER.encode(), b"1") in scope["headers"])


class MarkPolls:
    """Pure ASGI: a marked poll answered below 400 is quiet in the access log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _marked(scope):
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                _quiet.set(message["status"] < 400)
            await send(message)

        await self.app(scope, receive, sending)


class PollsAtDebug(logging.Filter):
    """On uvicorn's access logger: a quiet poll's line becomes a DEBUG line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _quiet.get():
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def install() -> None:
    """Put the filter on uvicorn's access logger (after uvicorn configured logging)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, PollsAtDebug) for f in logger.filters):
        logger.addFilter(PollsAtDebug())
