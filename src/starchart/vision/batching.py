"""Dynamic batching: gather items from concurrent callers into one call.

A model's forward pass costs little more for 32 inputs than for one, so
requests arriving together should share it. ``DynamicBatcher`` owns one
worker thread. Callers hand it items (``submit`` from any thread, ``run``
from asyncio); the worker takes the first waiting item, then keeps taking
until it holds ``max_batch`` items or ``max_wait_ms`` has passed since it
took the first, and calls ``fn`` once on the lot. Items queued while ``fn``
runs make the next batch, so a busy batcher never waits.

``fn`` maps a list of inputs to a list of outputs of the same length, in
order, and must give each item the result it would get alone: callers
never know which batch they were in. An item whose caller went away before
its batch started (its future cancelled) is dropped. If ``fn`` raises, every
item of that batch gets the exception.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class BatchStats:
    """How the batcher has been doing (tests and the benchmark read it)."""

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


@dataclass
class _Item(Generic[In, Out]):
    value: In
    future: Future[Out]


_STOP = object()


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
        self._queue: queue.Queue[object] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        # A daemon thread: an interpreter exiting without close() is not held up by it.
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, items: Sequence[In]) -> list[Future[Out]]:
        """Queue ``items``; one future per item, in order."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            futures: list[Future[Out]] = []
            for value in items:
                future: Future[Out] = Future()
                self._queue.put(_Item(value, future))
                futures.append(future)
        return futures

    async def run(self, items: Sequence[In]) -> list[Out]:
        """Results for ``items`` in order; cancelling the caller drops its waiting items."""
        futures = [asyncio.wrap_future(f) for f in self.submit(items)]
        try:
            return list(await asyncio.gather(*futures))
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        """Finish the batches already queued, then stop the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()

    def _gather(self, first: _Item[In, Out]) -> tuple[list[_Item[In, Out]], bool]:
        """The batch that starts with ``first``, and whether a stop was seen."""
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)  # type: ignore[arg-type]
        return batch, False

    def _work(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch, stopping = self._gather(first)  # type: ignore[arg-type]
            # Claim each future; a cancelled one (caller gone) is not computed.
            live = [item for item in batch if item.future.set_running_or_notify_cancel()]
            if not live:
                continue
            self.stats.record(len(live))
            try:
                outputs = list(self._fn([item.value for item in live]))
                if len(outputs) != len(live):
                    raise RuntimeError(f"batch function returned {len(outputs)} results"
                                       f" for {len(live)} inputs")
            except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
                for item in live:
                    item.future.set_exception(exc)
                continue
            for item, output in zip(live, outputs, strict=True):
                item.future.set_result(output)
