import asyncio
import threading
import time

from starchart.engines.worker import SerialWorker


def test_jobs_run_one_after_another_in_order() -> None:
    worker = SerialWorker("t")
    log: list[str] = []

    def job(name: str):
        def run(cancel: threading.Event):
            for i in range(3):
                log.append(f"{name}{i}")
                time.sleep(0.01)
                yield i
        return run

    async def main() -> list[list[int]]:
        async def consume(name: str) -> list[int]:
            return [x async for x in worker.stream(job(name))]
        return await asyncio.gather(consume("a"), consume("b"), consume("c"))

    results = asyncio.run(main())
    worker.close()
    assert results == [[0, 1, 2]] * 3
    assert log == ["a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1", "c2"]


def test_abandoned_queued_job_never_runs_and_running_job_stops() -> None:
    worker = SerialWorker("t")
    ran: list[str] = []
    release = threading.Event()

    def blocking(cancel: threading.Event):
        ran.append("first")
        yield 1
        release.wait(5)
        n = 0
        try:
            while n < 1000:
                n += 1
                time.sleep(0.001)
                yield 2
        finally:
            ran.append(f"first stopped after {n}")

    def second(cancel: threading.Event):
        ran.append("second")
        yield 3

    async def main() -> None:
        first = worker.stream(blocking)
        assert await first.__anext__() == 1
        queued = worker.stream(second)
        pending = asyncio.ensure_future(queued.__anext__())
        await asyncio.sleep(0.05)
        pending.cancel()  # the client of the queued job goes away
        await asyncio.gather(pending, return_exceptions=True)
        await queued.aclose()
        release.set()
        await first.__anext__()
        await first.aclose()  # the running job's client goes away
        while worker.queued:
            await asyncio.sleep(0.01)

    asyncio.run(main())
    worker.close()
    assert "second" not in ran
    assert ran[0] == "first" and ran[1].startswith("first stopped after")
    assert int(ran[1].rsplit(" ", 1)[1]) < 50


def test_errors_reach_the_consumer() -> None:
    worker = SerialWorker("t")

    def broken(cancel: threading.Event):
        yield 1
        raise ValueError("boom")

    async def main() -> None:
        got = []
        try:
            async for x in worker.stream(broken):
                got.append(x)
        except ValueError as exc:
            assert str(exc) == "boom"
        else:
            raise AssertionError("no error")
        assert got == [1]

    asyncio.run(main())
    worker.close()
