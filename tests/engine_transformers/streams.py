"""Draining engine streams in sync tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from starchart.engines.base import Finish, StreamEvent, TextDelta

T = TypeVar("T")


async def drain(events: AsyncIterator[StreamEvent]) -> tuple[list[str], Finish]:
    """All text deltas (one list item each) and the closing Finish."""
    deltas: list[str] = []
    finish = None
    async for event in events:
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        else:
            finish = event
    assert finish is not None
    return deltas, finish


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)
