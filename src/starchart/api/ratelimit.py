"""Per-key rate limits: requests and tokens per minute, OpenAI's way.

Off unless ``rate_limit_requests`` or ``rate_limit_tokens`` is set. A request
that does work (a POST under ``/v1/``) is counted against its API key (without
keys: its client address) over a sliding minute. Past either limit it gets a
429 ``rate_limit_exceeded`` with ``Retry-After``; every counted answer carries
OpenAI's headers: ``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests``,
``x-ratelimit-reset-requests`` (and the same three for ``-tokens``).

Tokens are known only once a generation ends: the chat service charges them to
the meter this middleware puts in the request's context (``services/usage.py``),
so a key may overshoot its token limit by the answers running when it is reached;
its next request then waits until the window frees enough.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starchart.api.errors import error_response
from starchart.errors import RateLimited
from starchart.services import usage

WINDOW = 60.0


@dataclass
class _Window:
    """Amounts spent over the last minute (oldest first)."""

    spent: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def used(self, now: float) -> int:
        while self.spent and self.spent[0][0] <= now - WINDOW:
            self.total -= self.spent.popleft()[1]
        return self.total

    def add(self, now: float, amount: int) -> None:
        self.spent.append((now, amount))
        self.total += amount

    def free_in(self, now: float, limit: int) -> float:
        """Seconds until the amount used falls below ``limit`` again."""
        left = self.total
        for at, amount in self.spent:
            if left < limit:
                break
            left -= amount
            if left < limit:
                return max(0.0, at + WINDOW - now)
        return 0.0

    def empty_in(self, now: float) -> float:
        """Seconds until nothing is used (OpenAI's reset: back to the initial state)."""
        return max(0.0, self.spent[-1][0] + WINDOW - now) if self.spent else 0.0


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``250ms``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = math.ceil(seconds)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


@dataclass
class _Bucket:
    requests: _Window = field(default_factory=_Window)
    tokens: _Window = field(default_factory=_Window)


class RateLimiter:
    def __init__(self, app: ASGIApp, requests: int, tokens: int) -> None:
        self.app = app
        self.limits = {"requests": requests, "tokens": tokens}
        self.buckets: dict[str, _Bucket] = {}

    def _bucket(self, scope: Scope) -> _Bucket:
        key = (scope.get("state") or {}).get("api_key_id")
        if key is None:
            client = scope.get("client")
            key = f"address:{client[0] if client else '?'}"
        return self.buckets.setdefault(key, _Bucket())

    def _headers(self, bucket: _Bucket, now: float) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        for kind, window in (("requests", bucket.requests), ("tokens", bucket.tokens)):
            limit = self.limits[kind]
            if not limit:
                continue
            used = window.used(now)
            out += [(f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()),
                    (f"x-ratelimit-remaining-{kind}".encode(),
                     str(max(0, limit - used)).encode()),
                    (f"x-ratelimit-reset-{kind}".encode(),
                     _duration(window.empty_in(now)).encode())]
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope[
                "path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        bucket = self._bucket(scope)
        now = time.monotonic()
        for kind, window in (("requests", bucket.requests), ("tokens", bucket.tokens)):
            limit = self.limits[kind]
            if limit and window.used(now) >= limit:
                wait = window.free_in(now, limit)
                response = error_response(RateLimited(
                    f"rate limit reached: {limit} {kind} per minute for this API key"
                    f" (setting rate_limit_{kind}); retry in {_duration(wait)}",
                    retry_after=max(1, math.ceil(wait))))
                response.raw_headers.extend(self._headers(bucket, now))
                await response(scope, receive, send)
                return
        bucket.requests.add(now, 1)
        headers = self._headers(bucket, now)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        token = usage.meter.set(lambda spent: bucket.tokens.add(time.monotonic(), spent))
        try:
            await self.app(scope, receive, sending)
        finally:
            usage.meter.reset(token)
