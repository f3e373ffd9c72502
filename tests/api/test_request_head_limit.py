"""`starchart serve` reads a request's head (request line and headers) up to a limit,
as uvicorn's pure-Python parser (h11) did: with the C parser (httptools) uvicorn sets
none, and a client could make the server hold any amount of memory by sending one
header that never ends."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_store_durability import ServeProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    home: Path = tmp_path_factory.mktemp("home")
    process = ServeProcess(home, "--load-on-demand").start()
    try:
        yield process
    finally:
        process.stop()


def _answer_to_endless_header(server: ServeProcess, size: int) -> bytes:
    """Send a header ``size`` bytes long and not ended; what the server answers (b""
    when it closes the connection without an answer)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: ")
        chunk = b"a" * 65536
        try:
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)
        except OSError:  # (the server closed the connection: what is asked)
            pass
        deadline = time.monotonic() + 20
        reply = b""
        try:
            while time.monotonic() < deadline:
                part = sock.recv(4096)
                if not part:
                    return reply
                reply += part
        except TimeoutError:
            raise AssertionError("the server is still waiting for the header's end") from None
        except ConnectionResetError:
            return reply
        return reply


def test_a_header_that_never_ends_is_refused(server: ServeProcess) -> None:
    reply = _answer_to_endless_header(server, 4 * 2**20)
    assert reply == b"" or reply.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), reply[:100]


def test_ordinary_heads_and_large_bodies_still_pass(server: ServeProcess) -> None:
    headers = {"X-Large": "b" * 8000, "Cookie": "c" * 4000}
    assert httpx.get(server.url + "/v1/models", headers=headers, timeout=30).status_code == 200
    # A body is not a head: a large one in the same packets is read as before.
    body = {"model": "none", "messages": [{"role": "user", "content": "d" * 2**20}]}
    answer = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert answer.status_code == 404 and "none" in answer.text, answer.text[:200]


def test_a_request_after_a_large_body_in_the_same_packets_is_not_a_long_head(
        server: ServeProcess) -> None:
    # Pipelined: a POST with a 60 KB body and the start of the next request sent at
    # once, the rest of that one a little later.
    body = json.dumps({"model": "none", "messages": [{"role": "user", "content": "d" * 60000}]})
    post = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}")
    get = "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall((post + get[:20]).encode())
        time.sleep(0.5)
        sock.sendall(get[20:].encode())
        replies = b""
        while part := sock.recv(65536):
            replies += part
    statuses = re.findall(rb"HTTP/1.1 (\d+) ", replies)
    assert statuses == [b"404", b"200"], replies[:300]
