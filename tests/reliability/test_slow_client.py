"""A client that reads a stream very slowly (here: not at all) neither blocks the others
nor makes the server hold its answer: the send buffer fills, and after --send-timeout the
connection is dropped and its generation stopped."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from starchart.api.app import create_app
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port
from tests.reliability.conftest import rss_bytes
from tests.scripted_engine import ScriptedEngine

PIECE = "x" * 16_384
PIECES = 4_000  # a 64 MB answer, if anyone read it
SEND_TIMEOUT = 2.0


@pytest.fixture
def server(tmp_path: Path, engine: LlamaCppEngine) -> Iterator[tuple[LiveServer, ScriptedEngine]]:
    big = ScriptedEngine([PIECE] * PIECES, model_id="firehose", delay=0.0005)
    big.load()
    settings = Settings(home=tmp_path / "home", n_ctx=2048, send_timeout=SEND_TIMEOUT)
    with LiveServer(create_app(settings, engines=[engine, big]), free_port()) as live:
        yield live, big


def test_a_client_that_does_not_read_is_dropped_and_blocks_nobody(
        server: tuple[LiveServer, ScriptedEngine], report: Callable[[str, str], None]) -> None:
    live, _ = server
    service = live.app.state.service
    before = rss_bytes_self()
    body = json.dumps({"model": "firehose", "messages": [{"role": "user", "content": "go"}],
                       "max_tokens": PIECES, "stream": True}).encode()
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", live.port))
    slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type:"
                 b" application/json\r\nContent-Length: " + str(len(body)).encode()
                 + b"\r\n\r\n" + body)
    started = time.monotonic()
    # Meanwhile another client is served as usual.
    answer = httpx.post(live.url + "/v1/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8})
    other = time.monotonic() - started
    assert answer.status_code == 200 and answer.json()["choices"][0]["finish_reason"]
    deadline = time.monotonic() + SEND_TIMEOUT + 20
    while service.stats.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    dropped = time.monotonic() - started
    assert service.stats.in_flight == 0, "the unread stream was dropped"
    grown = rss_bytes_self() - before
    received = 0
    slow.settimeout(10)
    try:
        while chunk := slow.recv(65536):
            received += len(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    slow.close()
    assert received < PIECES * len(PIECE) // 4, "most of the answer was never produced"
    assert grown < 64 * 2**20
    report("slow client", f"a client reading nothing was dropped {dropped:.1f} s after it"
           f" asked (--send-timeout {SEND_TIMEOUT:g}) having received {received / 2**20:.1f}"
           f" MiB of a 64 MB answer; another client was answered in {other:.2f} s meanwhile;"
           f" RSS +{grown / 2**20:.0f} MiB")


def rss_bytes_self() -> int:
    import os

    return rss_bytes(os.getpid())
