"""Relayed requests that arrive together go upstream first come, first served.

A real front (`starchart serve --upstream`, its own process) relays to a raw
upstream on loopback that notes when each request reached it. A burst of
requests, each with a body that takes the front a while to parse and validate,
is written on as many connections at once. Without an order, the front's one
event loop took every request of the burst through its parsing before the first
went upstream, so the first arrival came nearly as late as the last; in arrival
order, the first goes upstream after its own parsing alone.
"""

from __future__ import annotations

import json
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from starchart.api.relay_order import PEEK_LIMIT

from tests.e2e.test_store_durability import ServeProcess
from tests.remote.raw_upstream import FIRST, RawUpstream

BURST = 6
ROUNDS = 5


@pytest.fixture(scope="module")
def upstream() -> Iterator[RawUpstream]:
    with RawUpstream() as raw:
        yield raw


@pytest.fixture(scope="module")
def front(upstream: RawUpstream, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ServeProcess]:
    home: Path = tmp_path_factory.mktemp("home")
    server = ServeProcess(home, "--load-on-demand", "--upstream", f"raw={upstream.url}").start()
    try:
        yield server
    finally:
        server.stop()


def _request(port: int) -> bytes:
    # Many messages: parsing and validating the body is most of the front's work.
    messages = [{"role": "user", "content": f"message {i}: " + "words " * 20}
                for i in range(250)]
    body = json.dumps({"model": "raw", "stream": True, "messages": messages}).encode()
    assert len(body) < PEEK_LIMIT  # the front looks at it to find its model
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (port, len(body))) + body


def _burst(front: ServeProcess, request: bytes, arrivals: list[float]) -> tuple[float, float]:
    """(first, last) arrival upstream, in seconds after the burst was written."""
    arrivals.clear()
    connections = [socket.create_connection(("127.0.0.1", front.port), timeout=30)
                   for _ in range(BURST)]
    try:
        started = time.perf_counter()
        for connection in connections:
            connection.sendall(request)
        for connection in connections:
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200") and b"[DONE]" in answer, answer[:300]
    finally:
        for connection in connections:
            connection.close()
    assert len(arrivals) == BURST
    return min(arrivals) - started, max(arrivals) - started


def test_a_burst_goes_upstream_first_come_first_served(
        upstream: RawUpstream, front: ServeProcess) -> None:
    arrivals: list[float] = []

    def answer(i: int) -> bytes | None:
        if i == 0:
            arrivals.append(time.perf_counter())
            return FIRST
        return None

    upstream.body = answer
    request = _request(front.port)
    _burst(front, request, arrivals)  # warm-up: connections to the upstream, code paths
    rounds = [_burst(front, request, arrivals) for _ in range(ROUNDS)]
    share = statistics.median(first / last for first, last in rounds)
    # In arrival order the first goes after about 1/BURST of the burst's work;
    # all at once, after nearly all of it.
    assert share < 0.5, [(round(f * 1000, 1), round(la * 1000, 1)) for f, la in rounds]
