"""Relayed requests go upstream in the order they arrived.

One event loop serves every request. Requests that arrive together start in the
same turn of it, and each runs until its first wait; the way upstream (httpx's
connection pool and socket writes) has several such waits. So without an order,
every relayed request of a burst went upstream only once all of them had been
parsed and validated: the first one's forwarding paid for all the others' work,
and an upstream that batches continuously started its first step that much later.

``RelayOrder`` hands a baton from one request for a remote model to the next:
the holder runs from its parsing to the moment its body is written upstream while
the others wait, parked, before their own parsing. The baton passes on as soon
as the holder's request is written or fails, and after ``HOLD`` seconds at the
latest (a new connection to a distant upstream takes a network round trip), so a
slow holder delays the next request by that much at most. A new holder first lets
the answers that have arrived meanwhile be relayed (``answers_first``). Requests for local
models, and bodies too large to look at cheaply, never wait for it.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Collection
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HOLD = 0.005  # seconds a holder keeps the baton at most
PEEK_LIMIT = 64 * 1024  # bodies larger than this are not parsed twice to find the model
_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})

_turn: ContextVar[Callable[[], None] | None] = ContextVar("starchart_relay_turn", default=None)


def end_turn() -> None:
    """The current request is written upstream (or will not be): the next may go."""
    done = _turn.get()
    if done is not None:
        done()


async def answers_first() -> None:
    """Two turns of the event loop: in the first it reads the sockets (answers that
    arrived while the last holder worked wake their streams), in the second those
    streams relay what came. An answer relayed is a fraction of a request's work,
    and its client waits for it; a burst of small requests starts in one turn of the
    loop, so without this every request of it went upstream before any answer was
    read (measured at 8 streams: time to first token added 4.5-4.8 -> 2.6-3.4 ms)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


class Baton:
    """First come, first served; a holder keeps it at most ``hold`` seconds."""

    def __init__(self, hold: float = HOLD) -> None:
        self.hold = hold
        self._held = False
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def take(self) -> Callable[[], None]:
        """Wait for the baton; returns the (idempotent) function that passes it on."""
        if self._held:
            turn = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._pass()  # handed over just as this waiter left: hand it on
                elif turn in self._waiting:  # a pass may have gone by it, skipping it
                    self._waiting.remove(turn)
                raise
        else:
            self._held = True
        passed = False

        def done() -> None:
            nonlocal passed
            if not passed:
                passed = True
                timer.cancel()
                self._pass()

        timer = asyncio.get_running_loop().call_later(self.hold, done)
        return done

    def _pass(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._held = False


class RelayOrder:
    """ASGI middleware: requests for the ``remote`` models take the baton in turn."""

    def __init__(self, app: ASGIApp, remote: Collection[str], hold: float = HOLD) -> None:
        self.app = app
        self.remote = frozenset(remote)
        self.baton = Baton(hold)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (not self.remote or scope["type"] != "http" or scope["method"] != "POST"
                or scope["path"] not in _PATHS):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:  # the body is read, then replayed to the app as it came
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if not message.get("more_body", False) or size > PEEK_LIMIT:
                break
        replay = iter(messages)

        async def replaying() -> Message:
            return next(replay, None) or await receive()

        if not self._for_remote(messages, size):
            await self.app(scope, replaying, send)
            return
        done = await self.baton.take()
        await answers_first()
        token = _turn.set(done)
        try:
            await self.app(scope, replaying, send)
        finally:
            _turn.reset(token)
            done()

    def _for_remote(self, messages: list[Message], size: int) -> bool:
        if size > PEEK_LIMIT or messages[-1].get("more_body", False):
            return False
        try:
            body = json.loads(b"".join(m.get("body", b"") for m in messages))
        except (ValueError, RecursionError):  # not JSON; nested too deep to parse
            return False  # the app answers the 400
        # A model that is not a string (a list, an object: unhashable) is the app's 422.
        return isinstance(body, dict) and isinstance(model := body.get("model"), str) \
            and model in self.remote
