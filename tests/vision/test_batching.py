"""The dynamic batcher on its own, with a plain function as the "model"."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from starchart.vision.batching import DynamicBatcher


class Recorder:
    """Squares numbers and remembers the batches it was called with."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.release = threading.Event()
        self.release.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.release.wait(5)
        self.batches.append(list(items))
        time.sleep(self.delay)
        return [x * x for x in items]


def test_announced_items_are_waited_for_and_share_one_call() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch=16, max_wait_ms=5000)

    async def caller(i: int) -> list[int]:
        with batcher.expect(1) as expected:
            await asyncio.sleep(0.005 * i)  # "decoding": ready at different times
            return await batcher.run([i], expected)

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(caller(i) for i in range(10)))

    try:
        started = time.monotonic()
        results = asyncio.run(main())
        took = time.monotonic() - started
    finally:
        batcher.close()
    assert results == [[i * i] for i in range(10)]
    assert len(fn.batches) == 1 and sorted(fn.batches[0]) == list(range(10))
    assert batcher.stats.largest == 10
    assert took < 4  # started as soon as the last announced item came, not at max_wait


def test_a_lone_item_does_not_wait() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch=64, max_wait_ms=60_000)
    try:
        started = time.monotonic()
        assert batcher.submit([3])[0].result(timeout=30) == 9
        assert time.monotonic() - started < 10  # nothing announced: no reason to wait
    finally:
        batcher.close()
    assert fn.batches == [[3]]


def test_the_wait_for_announced_items_is_bounded_by_max_wait() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch=8, max_wait_ms=100)
    try:
        with batcher.expect(2) as expected:
            started = time.monotonic()
            future = batcher.submit([2], expected)[0]
            assert future.result(timeout=30) == 4  # the second item never came
            waited = time.monotonic() - started
            assert batcher.on_their_way == 1
        assert batcher.on_their_way == 0
    finally:
        batcher.close()
    assert 0.09 <= waited < 10


def test_withdrawn_items_are_not_waited_for() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch=8, max_wait_ms=60_000)
    try:
        started = time.monotonic()
        with batcher.expect(3) as expected:
            future = batcher.submit([5], expected)[0]
            expected.withdraw(2)  # e.g. the other two were found in a cache
            assert future.result(timeout=30) == 25
        with pytest.raises(KeyError), batcher.expect(1):
            raise KeyError("a caller failing before it submits")
        assert batcher.on_their_way == 0
        assert batcher.submit([6])[0].result(timeout=30) == 36
        assert time.monotonic() - started < 10
    finally:
        batcher.close()


def test_never_more_than_max_batch_and_order_kept() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch=4, max_wait_ms=50)
    fn.release.clear()
    try:
        futures = batcher.submit(list(range(10)))
        fn.release.set()
        assert [f.result(timeout=5) for f in futures] == [i * i for i in range(10)]
    finally:
        batcher.close()
    assert [len(b) for b in fn.batches] == [4, 4, 2]
    assert [x for b in fn.batches for x in b] == list(range(10))


def test_items_queued_while_busy_form_the_next_batch() -> None:
    fn = Recorder()
    fn.release.clear()  # hold the first batch inside fn
    batcher = DynamicBatcher(fn, max_batch=8, max_wait_ms=0)
    try:
        first = batcher.submit([0])
        time.sleep(0.05)  # the worker has taken [0] and is blocked in fn
        rest = batcher.submit([1, 2, 3])
        fn.release.set()
        assert [f.result(timeout=5) for f in first + rest] == [0, 1, 4, 9]
    finally:
        batcher.close()
    assert fn.batches == [[0], [1, 2, 3]]


def test_an_error_reaches_every_caller_of_the_batch_and_the_batcher_goes_on() -> None:
    def fn(items: list[int]) -> list[int]:
        if 13 in items:
            raise ValueError("unlucky")
        return items

    batcher = DynamicBatcher(fn, max_batch=8, max_wait_ms=50)
    try:
        futures = batcher.submit([1, 13])
        for future in futures:
            with pytest.raises(ValueError, match="unlucky"):
                future.result(timeout=5)
        assert batcher.submit([5])[0].result(timeout=5) == 5
    finally:
        batcher.close()


def test_a_wrong_number_of_results_is_an_error_not_a_mismatch() -> None:
    batcher = DynamicBatcher(lambda items: items[:-1], max_batch=8, max_wait_ms=50)
    try:
        with pytest.raises(RuntimeError, match="returned 1 results for 2 inputs"):
            for future in batcher.submit([1, 2]):
                future.result(timeout=5)
    finally:
        batcher.close()


def test_cancelled_items_are_not_computed() -> None:
    fn = Recorder()
    fn.release.clear()
    batcher = DynamicBatcher(fn, max_batch=8, max_wait_ms=0)
    try:
        busy = batcher.submit([1])
        time.sleep(0.05)
        gone = batcher.submit([2, 3])
        for future in gone:
            assert future.cancel()
        kept = batcher.submit([4])
        fn.release.set()
        assert busy[0].result(timeout=5) == 1 and kept[0].result(timeout=5) == 16
    finally:
        batcher.close()
    assert fn.batches == [[1], [4]]


def test_cancelling_the_async_caller_drops_its_waiting_items() -> None:
    fn = Recorder()
    fn.release.clear()
    batcher = DynamicBatcher(fn, max_batch=8, max_wait_ms=0)

    async def main() -> None:
        busy = batcher.submit([1])
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(batcher.run([2, 3]))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        fn.release.set()
        await asyncio.wrap_future(busy[0])

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert fn.batches == [[1]]


def test_close_finishes_queued_work_then_refuses_more() -> None:
    fn = Recorder(delay=0.01)
    batcher = DynamicBatcher(fn, max_batch=2, max_wait_ms=0)
    futures = batcher.submit(list(range(6)))
    batcher.close()
    assert [f.result(timeout=0) for f in futures] == [i * i for i in range(6)]
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit([1])


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(lambda x: x, max_batch=0, max_wait_ms=1)
    with pytest.raises(ValueError):
        DynamicBatcher(lambda x: x, max_batch=1, max_wait_ms=-1)


def test_set_count_corrects_the_announcement() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch=8, max_wait_ms=60_000)
    try:
        with batcher.expect(1) as expected:  # "a request arrived", before reading its body
            assert batcher.on_their_way == 1
            expected.set_count(3)  # its body holds three images
            assert batcher.on_their_way == 3 and expected.remaining == 3
            futures = batcher.submit([1, 2], expected)
            assert batcher.on_their_way == 1
            expected.set_count(0)  # the third turned out to be unusable
            assert batcher.on_their_way == 0
            assert [f.result(timeout=30) for f in futures] == [1, 4]
    finally:
        batcher.close()


def test_a_cheap_function_hardly_waits_for_stragglers() -> None:
    fn = Recorder()  # takes microseconds
    batcher = DynamicBatcher(fn, max_batch=8, max_wait_ms=60_000)
    try:
        assert batcher.submit([1])[0].result(timeout=30) == 1  # one pass: fn is cheap
        with batcher.expect(2) as expected:
            started = time.monotonic()
            future = batcher.submit([2], expected)[0]
            assert future.result(timeout=30) == 4  # not held for the announced straggler
            assert time.monotonic() - started < 10
    finally:
        batcher.close()
