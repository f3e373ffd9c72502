"""The client to upstreams (``engines/upstream_http``) against what a hostile client
or upstream does: a real front relays to a raw upstream on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, free_port
from tests.remote.raw_upstream import (
    FIRST,
    LoopbackServer,
    RawUpstream,
    read_request,
    relay_front,
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[RawUpstream]:
    with RawUpstream() as raw:
        raw.body = lambda i: (FIRST, b"data: [DONE]\n\n")[i] if i < 2 else None
        yield raw


@pytest.fixture(scope="module")
def front(upstream: RawUpstream, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[LiveServer]:
    with relay_front(tmp_path_factory.mktemp("home"), f"raw={upstream.url}",
                     upstream_first_token_timeout=10, upstream_idle_timeout=10) as server:
        yield server


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("field", [
    b'"seed_extra":NaN', b'"seed_extra":-Infinity', b'"seed_extra":1e400',
    b'"logit_bias":{"1":NaN}', b'"user_extra":"\\ud800"', b'"\\udc00":1',
])
def test_a_body_json_cannot_carry_upstream_is_a_400(
        front: LiveServer, field: bytes, stream: bool) -> None:
    """Python's JSON parser takes NaN, Infinity and numbers too large for a double, and
    a lone surrogate is valid JSON: in a field the front passes on unchecked, none of
    them can be written to the upstream as JSON. The client is told so (a 400), not
    given a 500."""
    body = (b'{"model":"raw","stream":%s,"messages":[{"role":"user","content":"hi"}],%s}'
            % (b"true" if stream else b"false", field))
    response = httpx.post(front.url + "/v1/chat/completions", content=body, timeout=30,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


class KeptAliveUpstream(LoopbackServer):
    """Keeps connections alive; once ``dead`` is set, resets every connection that
    already served a request as the next one arrives on it (as connections through a
    middlebox that forgot them, or to an upstream restarted behind the same address,
    die: no FIN first)."""

    def __init__(self) -> None:
        self.dead = False
        self.down = False  # resets every POST, on new connections too
        self.connections = 0
        super().__init__()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await read_request(reader)
                if (self.dead and served) or (self.down and head.startswith(b"POST")):
                    writer.get_extra_info("socket").setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                served += 1
                if head.startswith(b"GET"):
                    body = json.dumps({"object": "list", "data": [{"id": "raw"}]}).encode()
                else:
                    await asyncio.sleep(0.3)  # requests side by side: one connection each
                    body = json.dumps({"id": "x", "object": "chat.completion", "created": 0,
                                       "model": "raw", "choices": []}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()


def test_kept_alive_connections_that_all_died_are_not_an_error_to_the_client(
        tmp_path: Path) -> None:
    """Every pooled connection to the upstream is dead, and only sending on it shows
    it: the request goes out again until it is on a new connection (one that fails
    says the upstream is down); the client gets its answer."""
    upstream = KeptAliveUpstream()
    body = {"model": "raw", "messages": [{"role": "user", "content": "hi"}]}
    try:
        with relay_front(tmp_path, f"raw={upstream.url}", upstream_first_token_timeout=10,
                         upstream_idle_timeout=10) as front, ThreadPoolExecutor(3) as pool:
            def ask(_: object) -> int:
                return httpx.post(front.url + "/v1/chat/completions", json=body,
                                  timeout=30).status_code

            assert list(pool.map(ask, range(3))) == [200] * 3
            assert upstream.connections >= 3
            upstream.dead = True
            answer = httpx.post(front.url + "/v1/chat/completions", json=body, timeout=30)
            assert answer.status_code == 200, answer.text
            # A new connection that fails is not tried again: the upstream is down.
            upstream.down, before = True, upstream.connections
            answer = httpx.post(front.url + "/v1/chat/completions", json=body, timeout=30)
            assert answer.status_code == 502, answer.text
            assert upstream.connections - before == 1
    finally:
        upstream.close()


def test_an_upstream_that_takes_none_of_a_large_request_is_a_504(tmp_path: Path) -> None:
    """An upstream that accepts the connection and never reads the request (stuck): the
    front's write waits for room for the idle timeout, then the client gets a 504,
    not a 500."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = listener.accept()
                held.append(connection)
                if connection.recv(4096).startswith(b"GET"):  # the probe: answered
                    listing = b'{"object":"list","data":[{"id":"raw"}]}'
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                       % (len(listing), listing))

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with relay_front(tmp_path, f"raw={url}", max_body_bytes=80 * 2**20,
                         upstream_first_token_timeout=30, upstream_idle_timeout=0.5) as front:
            for stream in (False, True):
                answer = httpx.post(front.url + "/v1/chat/completions", timeout=30, json={
                    "model": "raw", "stream": stream,
                    "messages": [{"role": "user", "content": "x" * (64 * 2**20)}]})
                assert answer.status_code == 504, answer.text
                assert answer.json()["error"]["code"] == "upstream_timeout"
    finally:
        listener.close()
        for connection in held:
            connection.close()


def test_a_password_in_an_upstream_url_is_never_shown(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``http://user:password@host`` (a gateway with Basic auth): the password goes
    upstream as a header, and is in no error body, model listing or log line."""
    caplog.set_level(logging.DEBUG)
    dead = f"http://relay:s3cret@127.0.0.1:{free_port()}/gw"
    with relay_front(tmp_path, f"gw={dead}", upstream_first_token_timeout=10) as front:
        answer = httpx.post(front.url + "/v1/chat/completions", timeout=30, json={
            "model": "gw", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 502
        listing = httpx.get(front.url + "/v1/models", timeout=30).text
    assert "s3cret" not in answer.text and "relay:***@127.0.0.1" in answer.text
    assert "s3cret" not in listing and "relay:***@127.0.0.1" in listing
    assert "relay:***@127.0.0.1" in caplog.text and "s3cret" not in caplog.text
