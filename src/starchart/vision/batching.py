"""Dynamic batching: gather items from concurrent callers into one call.

A model's forward pass costs little more for 32 inputs than for one, so
requests arriving together should share it. ``DynamicBatcher`` owns one
worker thread that calls ``fn`` on lists of queued items, at most
``max_batch`` at a time.

When to stop gathering? A fixed time window either makes every lone request
wait for nobody or cuts a burst of requests into a small first batch and a
large second one. So callers announce items before they are ready: a request
that will submit an image once it is decoded and preprocessed says so first
(``expect(n)``, a context manager; its items count as *on their way* until
``submit`` or the end of the ``with``; ``set_count`` corrects the number once
the caller knows it). The worker then gathers while items
are on their way, up to ``max_batch`` items or ``max_wait_ms`` after it took
the first one (or as long as the last call of ``fn`` took, if that is less),
and starts at once when nothing more is on its way: a lone request never
waits. Items queued while ``fn`` runs make the next batch.

``fn`` maps a list of inputs to a list of outputs of the same length, in
order, and must give each item the result it would get alone: callers never
know which batch they were in. An item whose caller went away before its
batch started (its future cancelled) is dropped. If ``fn`` raises, every item
of that batch gets the exception.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class BatchStats:
    """How the batcher has been doing (tests, /v1/models and the benchmark read it)."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    sizes: list[int] = field(default_factory=list)

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.largest = max(self.largest, size)
        if len(self.sizes) < 1000:  # bounded: only the first batches are kept for inspection
            self.sizes.append(size)

    def as_dict(self) -> dict[str, float | int]:
        return {"batches": self.batches, "items": self.items, "largest": self.largest,
                "mean": round(self.items / self.batches, 2) if self.batches else 0}


@dataclass
class _Item(Generic[In, Out]):
    value: In
    future: Future[Out]


class Expected:
    """Items a caller announced and has not submitted yet (see ``DynamicBatcher.expect``)."""

    def __init__(self, batcher: DynamicBatcher, count: int) -> None:  # type: ignore[type-arg]
        self._batcher = batcher
        self.remaining = count

    def __enter__(self) -> Expected:
        return self

    def __exit__(self, *exc: object) -> None:
        # Whatever was not submitted (the caller failed, or sent fewer) is no longer coming.
        self.withdraw(self.remaining)

    def withdraw(self, count: int) -> None:
        """``count`` of the announced items will not come after all."""
        self._batcher._settle(self, count)

    def set_count(self, count: int) -> None:
        """The caller now knows how many items it will submit (more or fewer)."""
        if count < self.remaining:
            self.withdraw(self.remaining - count)
        elif count > self.remaining:
            self._batcher._announce(self, count - self.remaining)


class DynamicBatcher(Generic[In, Out]):
    def __init__(self, fn: Callable[[list[In]], Sequence[Out]], *, max_batch: int,
                 max_wait_ms: float, name: str = "batcher") -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        self._fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.stats = BatchStats()
        self._pending: deque[_Item[In, Out]] = deque()
        self._on_their_way = 0
        self._pass_seconds = self.max_wait  # how long the last call of fn took
        self._closed = False
        self._cond = threading.Condition()
        # A daemon thread: an interpreter exiting without close() is not held up by it.
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def on_their_way(self) -> int:
        return self._on_their_way

    def expect(self, count: int) -> Expected:
        """Announce ``count`` items to come; use as ``with batcher.expect(n) as e:``."""
        expected = Expected(self, 0)
        self._announce(expected, count)
        return expected

    def _announce(self, expected: Expected, count: int) -> None:
        with self._cond:
            expected.remaining += count
            self._on_their_way += count

    def _settle(self, expected: Expected, count: int) -> None:
        with self._cond:
            self._settle_locked(expected, count)

    def _settle_locked(self, expected: Expected, count: int) -> None:
        count = min(count, expected.remaining)
        expected.remaining -= count
        self._on_their_way -= count
        self._cond.notify_all()

    def submit(self, items: Sequence[In], expected: Expected | None = None
               ) -> list[Future[Out]]:
        """Queue ``items``; one future per item, in order."""
        futures: list[Future[Out]] = [Future() for _ in items]
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._pending.extend(_Item(v, f) for v, f in zip(items, futures, strict=True))
            # In the same step as queuing them, so the worker never sees the items
            # neither on their way nor queued.
            if expected is not None:
                self._settle_locked(expected, len(items))
            self._cond.notify_all()
        return futures

    async def run(self, items: Sequence[In], expected: Expected | None = None) -> list[Out]:
        """Results for ``items`` in order; cancelling the caller drops its waiting items."""
        futures = [asyncio.wrap_future(f) for f in self.submit(items, expected)]
        try:
            return list(await asyncio.gather(*futures))
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        """Finish the batches already queued, then stop the worker."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _next_batch(self) -> list[_Item[In, Out]] | None:
        """Block until there is work; None once closed and drained."""
        with self._cond:
            while not self._pending:
                if self._closed:
                    return None
                self._cond.wait()
            # Waiting longer than a forward pass takes costs more than running one more
            # pass for the stragglers: a cheap model (or a fast GPU) hardly waits at all.
            deadline = time.monotonic() + min(self.max_wait, self._pass_seconds)
            while (len(self._pending) < self.max_batch and self._on_their_way > 0
                   and not self._closed):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            count = min(self.max_batch, len(self._pending))
            return [self._pending.popleft() for _ in range(count)]

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            # Claim each future; a cancelled one (caller gone) is not computed.
            live = [item for item in batch if item.future.set_running_or_notify_cancel()]
            if not live:
                continue
            self.stats.record(len(live))
            started = time.monotonic()
            try:
                outputs = list(self._fn([item.value for item in live]))
                self._pass_seconds = time.monotonic() - started
                if len(outputs) != len(live):
                    raise RuntimeError(f"batch function returned {len(outputs)} results"
                                       f" for {len(live)} inputs")
            except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
                for item in live:
                    item.future.set_exception(exc)
                continue
            for item, output in zip(live, outputs, strict=True):
                item.future.set_result(output)
