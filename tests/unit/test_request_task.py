"""A request's work runs in the request's own task, from its first line on, and
so does its event stream.

Requests that arrive together start together: uvicorn makes a task for each in
one turn of the event loop. Work handed to a new task waits until every one of
them has run up to its first wait (parsing, validating), so a relayed request
reached its upstream behind the requests that came with it. The drain middleware
and ``cancel_on_disconnect`` used to hand the work to a task of their own; they
run it in place, and their cancellation still works (tests/reliability)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from starchart.api.shutdown import Drain, DrainMiddleware
from starchart.api.streaming import DONE, EventStream, cancel_on_disconnect


class _Neighbour:
    """A task scheduled just before the work: it runs at the loop's next turn."""

    def __init__(self) -> None:
        self.ran = False
        asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        self.ran = True


async def _receive() -> dict[str, Any]:
    await asyncio.Event().wait()  # no disconnect, ever
    return {}


async def _send(message: dict[str, Any]) -> None:
    pass


def _scope() -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/"}


def _leaving_after(seconds: float) -> Any:
    """A receive for a client that disconnects ``seconds`` in."""
    async def receive() -> dict[str, Any]:
        await asyncio.sleep(seconds)
        return {"type": "http.disconnect"}
    return receive


def _leaving(leave: asyncio.Event) -> Any:
    """A receive for a client that disconnects once ``leave`` is set."""
    async def receive() -> dict[str, Any]:
        await leave.wait()
        return {"type": "http.disconnect"}
    return receive


async def _through_the_drain(app: Any, receive: Any, send: Any
                             ) -> tuple[Drain, asyncio.Task[None]]:
    """One request handled by the drain middleware, 10 ms in."""
    drain = Drain(timeout=5)
    handling = asyncio.create_task(DrainMiddleware(app, drain)(
        _scope(), receive, send))
    await asyncio.sleep(0.01)
    return drain, handling


def _cut(drain: Drain) -> None:
    for connection in drain.connections:
        connection.cut()


def test_the_drain_middleware_runs_the_app_in_the_requests_task() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["task"] = asyncio.current_task()
        seen["loop turned"] = neighbour.ran

    async def request() -> None:
        nonlocal neighbour
        neighbour = _Neighbour()
        seen["caller"] = asyncio.current_task()
        await DrainMiddleware(app, Drain(timeout=5))(
            _scope(), _receive, _send)

    neighbour: _Neighbour
    asyncio.run(request())
    assert seen["task"] is seen["caller"]
    assert seen["loop turned"] is False


def test_cancel_on_disconnect_starts_the_work_before_the_loop_turns() -> None:
    async def work(neighbour: _Neighbour) -> bool:
        return neighbour.ran

    async def handler() -> bool:
        request = Request({"type": "http", "method": "POST", "path": "/", "headers": []},
                          _receive)
        return await cancel_on_disconnect(request, work(_Neighbour()))

    assert asyncio.run(handler()) is False


def test_cancel_on_disconnect_leaves_the_task_uncancelled_when_the_client_stays() -> None:
    async def work() -> str:
        await asyncio.sleep(0.01)
        return "answer"

    async def handler() -> tuple[str, int]:
        request = Request({"type": "http", "method": "POST", "path": "/", "headers": []},
                          _receive)
        answer = await cancel_on_disconnect(request, work())
        task = asyncio.current_task()
        assert task is not None
        return answer, task.cancelling()

    assert asyncio.run(handler()) == ("answer", 0)


def test_an_event_stream_sends_its_first_event_before_the_loop_turns() -> None:
    sent: list[tuple[str, bool]] = []

    async def events() -> AsyncIterator[str]:
        yield "data: first\n\n"

    async def send(message: dict[str, Any]) -> None:
        sent.append((message["type"], neighbour.ran))

    async def request() -> None:
        nonlocal neighbour
        neighbour = _Neighbour()
        await EventStream(events())({"type": "http", "method": "POST", "path": "/",
                                     "asgi": {"spec_version": "2.3"}}, _receive, send)

    neighbour: _Neighbour
    asyncio.run(request())
    assert sent[:2] == [("http.response.start", False), ("http.response.body", False)]


def test_an_event_streams_done_ends_its_body_in_the_same_message() -> None:
    """The last event and the body's end go out together (one write, not two); a
    stream whose events end without DONE still ends its body."""
    async def events(*frames: str) -> AsyncIterator[str]:
        for frame in frames:
            yield frame

    def sent(*frames: str) -> list[tuple[bytes, bool]]:
        got: list[tuple[bytes, bool]] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                got.append((message["body"], message["more_body"]))

        asyncio.run(EventStream(events(*frames))(
            _scope(), _receive, send))
        return got

    assert sent("data: 1\n\n", DONE) == [(b"data: 1\n\n", True), (DONE.encode(), False)]
    assert sent("data: 1\n\n") == [(b"data: 1\n\n", True), (b"", False)]


def test_an_event_stream_stops_its_events_when_the_client_leaves() -> None:
    closed = asyncio.Event()

    async def events() -> AsyncIterator[str]:
        try:
            yield "data: first\n\n"
            await asyncio.Event().wait()  # an answer that would never end
        finally:
            closed.set()

    async def request() -> bool:
        async with asyncio.timeout(5):
            await EventStream(events())(_scope(), _leaving_after(0.01), _send)
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        return closed.is_set()

    assert asyncio.run(request()) is True


def test_a_cut_as_the_client_leaves_still_ends_the_answer() -> None:
    """The drain's cut and the client's leaving cancel the request's task in the same
    turn: both are counted on it, and each is caught by the one that asked for it."""
    leave = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        request = Request({**scope, "headers": []}, receive)
        await cancel_on_disconnect(request, asyncio.Event().wait())  # a long answer

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def request() -> int:
        drain, handling = await _through_the_drain(app, _leaving(leave), send)
        leave.set()  # the client leaves ...
        _cut(drain)  # ... as the drain cuts
        async with asyncio.timeout(5):
            await handling
        return len(sent)

    assert asyncio.run(request()) > 0  # the drain's answer (a 503), not a CancelledError


def test_a_cut_while_the_last_part_waits_to_be_sent_still_ends_the_answer() -> None:
    """uvicorn waits for a slow client to read before it writes a message: cut
    during that wait, the message was never written, and the drain ends the answer."""
    written: list[dict[str, Any]] = []
    reading = asyncio.Event()  # the client reads again (never, here)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: first\n\n",
                    "more_body": True})
        await send({"type": "http.response.body", "body": DONE.encode(), "more_body": False})

    async def send(message: dict[str, Any]) -> None:
        if written and not message.get("more_body", False) and not reading.is_set():
            await reading.wait()  # as uvicorn's flow control, before it writes
        written.append(message)

    async def request() -> None:
        drain, handling = await _through_the_drain(app, _receive, send)
        _cut(drain)
        reading.set()  # the drain's own last part goes out
        async with asyncio.timeout(5):
            await handling

    asyncio.run(request())
    assert written[-1]["type"] == "http.response.body" and not written[-1]["more_body"], \
        written


def test_a_cancel_the_work_swallowed_is_not_left_counted_on_the_request() -> None:
    """A client's leaving that the work swallows (asyncio.wait_for on Python 3.11 does,
    when what it waits for comes in the same turn) leaves no cancellation counted on
    the request's task: a later drain cut would be taken for someone else's."""
    leave = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def swallowing() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass  # as wait_for when its result came with the cancellation
        return "answer"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await cancel_on_disconnect(Request({**scope, "headers": []}, receive), swallowing())
        await asyncio.Event().wait()  # more work, still running when the drain cuts

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def request() -> None:
        drain, handling = await _through_the_drain(app, _leaving(leave), send)
        leave.set()
        await asyncio.sleep(0.01)
        _cut(drain)
        async with asyncio.timeout(5):
            await handling  # the cut is caught and answered, not raised
        assert handling.cancelling() == 0

    asyncio.run(request())


def test_an_event_stream_whose_events_swallow_the_cancel_still_stops() -> None:
    # A cancellation is delivered once; code that swallows it (asyncio.wait_for on
    # Python 3.11 when its result comes in the same turn, or an `except` too wide)
    # would go on generating for nobody: uvicorn drops what is sent after a
    # disconnect without a word. The stream stops at its next event, and closes
    # its events (so the engine hears of it).
    closed = asyncio.Event()
    produced: list[int] = []

    async def events() -> AsyncIterator[str]:
        try:
            for i in range(1000):
                try:
                    await asyncio.sleep(0.005)
                except asyncio.CancelledError:
                    pass  # swallowed
                produced.append(i)
                yield f"data: {i}\n\n"
        finally:
            closed.set()

    async def request() -> None:
        async with asyncio.timeout(5):
            await EventStream(events())(_scope(), _leaving_after(0.05), _send)

    asyncio.run(request())
    assert closed.is_set()
    assert len(produced) < 100, len(produced)  # not all 1000
