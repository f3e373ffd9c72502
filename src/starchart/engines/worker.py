"""Run blocking generation on one worker thread, stream it to asyncio.

An engine that cannot run two generations at once (llama.cpp's context) gets
a ``SerialWorker``: jobs run one after another in submission order. The
async side sees an ordinary async iterator. When the consumer goes away
(client disconnect, ``aclose``, task cancellation) the job's ``cancel`` event
is set: a job still waiting in the queue is dropped without running, a
running one sees the event at its next token and stops.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

Job = Callable[[threading.Event], Iterator[T]]


@dataclass(frozen=True)
class _Failed:
    exc: BaseException


_DONE = object()


class SerialWorker:
    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._waiting = 0
        self._lock = threading.Lock()

    @property
    def queued(self) -> int:
        """Jobs submitted and not finished (running or waiting)."""
        return self._waiting

    async def stream(self, job: Job[T]) -> AsyncIterator[T]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening
                cancel.set()

        def run() -> None:
            try:
                if cancel.is_set():
                    return
                items = job(cancel)
                try:
                    for item in items:
                        emit(item)
                        if cancel.is_set():
                            break
                finally:
                    # Close here, on the worker thread, not whenever GC gets to it.
                    close = getattr(items, "close", None)
                    if close is not None:
                        close()
            except BaseException as exc:  # noqa: BLE001 - forwarded to the consumer
                emit(_Failed(exc))
            finally:
                with self._lock:
                    self._waiting -= 1
                emit(_DONE)

        with self._lock:
            self._waiting += 1
        self._pool.submit(run)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failed):
                    raise item.exc
                yield item  # type: ignore[misc]
        finally:
            cancel.set()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
