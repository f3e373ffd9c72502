"""The relay's baton (api/relay_order.py): first come, first served; a holder
keeps it at most ``hold`` seconds; waiters that leave never strand it."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
import uvloop

from starchart.api.relay_order import Baton, RelayOrder


def test_holders_follow_each_other_in_arrival_order() -> None:
    async def scenario() -> list[str]:
        baton = Baton(hold=10)
        order: list[str] = []

        async def request(name: str, work: float) -> None:
            done = await baton.take()
            order.append(f"{name} took")
            await asyncio.sleep(work)
            order.append(f"{name} sent")
            done()
            done()  # passing it twice passes it once

        await asyncio.gather(*(request(n, 0.01) for n in "abc"))
        return order

    assert asyncio.run(scenario()) == ["a took", "a sent", "b took", "b sent", "c took", "c sent"]


def test_a_holder_that_keeps_it_too_long_loses_it_after_hold_seconds() -> None:
    async def scenario() -> float:
        baton = Baton(hold=0.05)
        await baton.take()  # never passed on by its holder
        started = time.monotonic()
        done = await baton.take()
        waited = time.monotonic() - started
        done()
        return waited

    assert 0.04 <= asyncio.run(scenario()) < 1.0


def _post(model: str) -> tuple[dict[str, Any], Any]:
    body = json.dumps({"model": model, "messages": []}).encode()
    messages = iter([{"type": "http.request", "body": body, "more_body": False}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    return scope, receive


def test_only_requests_for_remote_models_wait_for_the_baton() -> None:
    async def scenario() -> list[str]:
        seen: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            body = json.loads((await receive())["body"])  # replayed as it came
            seen.append(body["model"])

        order = RelayOrder(app, remote=["remote"], hold=10)
        held = await order.baton.take()  # a remote request's turn, not passed on
        await asyncio.wait_for(order(*_post("local"), None), 1)
        await asyncio.wait_for(order(*_post("unknown"), None), 1)
        waiting = asyncio.create_task(order(*_post("remote"), None))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        held()
        await asyncio.wait_for(waiting, 1)
        return seen

    assert asyncio.run(scenario()) == ["local", "unknown", "remote"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_answer_that_has_arrived_is_relayed_before_the_next_request_starts(
        loop: str) -> None:
    """Request A waits for its answer on a socket; the answer is there, not yet read,
    when request B's turn comes: A's stream runs before B's work starts."""
    seen: list[str] = []

    async def scenario() -> None:
        running = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        answer: asyncio.Future[bytes] = running.create_future()

        class Answer(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                answer.set_result(data)

        transport, _ = await running.create_connection(Answer, sock=ours)

        async def relayed() -> None:
            await answer
            seen.append("A's answer relayed")

        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen.append("B's work")

        waiting = asyncio.create_task(relayed())
        await asyncio.sleep(0)
        theirs.sendall(b"first token")  # arrived; the loop has not looked yet
        await asyncio.wait_for(RelayOrder(app, remote=["remote"], hold=10)(*_post("remote"),
                                                                            None), 1)
        await waiting
        transport.close()
        theirs.close()

    (uvloop.run if loop == "uvloop" else asyncio.run)(scenario())
    assert seen == ["A's answer relayed", "B's work"]


@pytest.mark.parametrize("when", ["waiting", "handed over"])
def test_a_waiter_cancelled_never_strands_the_baton(when: str) -> None:
    async def scenario() -> None:
        baton = Baton(hold=10)
        first = await baton.take()
        leaving = asyncio.create_task(baton.take())
        await asyncio.sleep(0)  # it waits in line
        if when == "handed over":
            first()  # the turn is handed to it ...
        leaving.cancel()  # ... as it leaves
        with pytest.raises(asyncio.CancelledError):
            await leaving
        if when == "waiting":
            first()
        # The next one in line gets it at once, not after some holder's timeout.
        async with asyncio.timeout(1):
            (await baton.take())()

    asyncio.run(scenario())


def test_a_waiter_cancelled_as_the_baton_passes_it_by_still_leaves_cancelled() -> None:
    async def scenario() -> None:
        baton = Baton(hold=10)
        first = await baton.take()
        leaving = asyncio.create_task(baton.take())
        await asyncio.sleep(0)  # it waits in line
        leaving.cancel()  # its turn is cancelled at once; it runs its handler later ...
        first()  # ... after the baton went past it (its turn was done: skipped)
        with pytest.raises(asyncio.CancelledError):
            await leaving
        async with asyncio.timeout(1):
            (await baton.take())()

    asyncio.run(scenario())


@pytest.mark.parametrize("body", [b'{"model": ["remote"], "messages": []}',
                                  b'{"model": {"id": "remote"}, "messages": []}',
                                  b"[" * 5000 + b"]" * 5000])
def test_a_body_the_app_refuses_reaches_the_app(body: bytes) -> None:
    """The app answers it (400 or 422), not the middleware (a 500)."""
    async def scenario() -> list[bytes]:
        seen: list[bytes] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen.append((await receive())["body"])

        messages = iter([{"type": "http.request", "body": body, "more_body": False}])

        async def receive() -> dict[str, Any]:
            return next(messages)

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
                 "headers": []}
        await asyncio.wait_for(RelayOrder(app, remote=["remote"], hold=10)(scope, receive, None),
                               1)
        return seen

    assert asyncio.run(scenario()) == [body]
