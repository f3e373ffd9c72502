"""Who pays for the tokens a generation uses: the meter of the request running it.

The API's rate limiter (``api/ratelimit.py``) puts a meter in the request's
context; the chat service charges it when a generation ends (a conversation
turn's task, started from the request, inherits the context). Without a meter
(the terminal chat, no limits) charging does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

meter: ContextVar[Callable[[int], None] | None] = ContextVar("starchart_meter", default=None)


def charge(tokens: int) -> None:
    pay = meter.get()
    if pay is not None and tokens > 0:
        pay(tokens)
