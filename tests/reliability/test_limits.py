"""Limits: oversized and absurd requests get a fast 4xx, with the server's peak memory
(VmHWM) measured around them."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.test_store_durability import ServeProcess
from tests.reliability.conftest import peak_rss_bytes

MB = 1_000_000


def _raw_post(port: int, path: str, length: int, sent: int) -> tuple[int, float]:
    """Declare a body of ``length`` bytes, send ``sent`` of them; (status, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type:"
                     f" application/json\r\nContent-Length: {length}\r\n\r\n".encode())
        try:
            sock.sendall(b"x" * sent)
        except OSError:
            pass  # refused before the body was read: the point
        status = int(sock.recv(4096).split(b" ", 2)[1])
    return status, time.monotonic() - started


def test_absurd_requests_get_a_fast_4xx_with_memory_bounded(
        serve: Callable[..., ServeProcess], report: Callable[[str, str], None]) -> None:
    server = serve()
    assert server.proc is not None
    pid = server.proc.pid
    url = server.url
    figures: list[str] = []
    peak = peak_rss_bytes(pid)

    def check(name: str, status: int, expected: int, seconds: float) -> None:
        nonlocal peak
        assert status == expected, (name, status)
        assert seconds < 10, (name, seconds)
        now = peak_rss_bytes(pid)
        figures.append(f"{name}: {status} in {seconds * 1000:.0f} ms, peak RSS"
                       f" +{(now - peak) / 2**20:.0f} MiB")
        peak = now

    status, seconds = _raw_post(server.port, "/v1/chat/completions", 100 * MB, 2 * MB)
    check("100 MB body", status, 413, seconds)

    with httpx.Client(base_url=url, timeout=60) as client:
        for name, body, param in (
                ("50,000-message conversation",
                 {"messages": [{"role": "user", "content": "hi"}] * 50_000}, "messages"),
                ("100,000-character message",
                 {"messages": [{"role": "user", "content": "word " * 20_000}]}, "messages"),
                ("1,000 stop strings",
                 {"messages": [{"role": "user", "content": "hi"}],
                  "stop": [f"s{i}" for i in range(1000)]}, "stop"),
                ("model ../../etc/passwd",
                 {"model": "../../etc/passwd", "messages": [{"role": "user",
                                                             "content": "hi"}]}, "model")):
            started = time.monotonic()
            response = client.post("/v1/chat/completions", json={"max_tokens": 4, **body})
            expected = 404 if param == "model" else 400
            check(name, response.status_code, expected, time.monotonic() - started)
            assert response.json()["error"]["param"] == param, response.text

    conv = httpx.post(url + "/v1/conversations", json={}).json()["id"]
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed, connect(
            url.replace("http", "ws") + f"/v1/conversations/{conv}/ws", max_size=None) as ws:
        ws.send(json.dumps({"content": "x" * (100 * MB)}))
        ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
    check("100 MB WebSocket frame", 1009, 1009, time.monotonic() - started)
    assert httpx.get(url + "/health").status_code == 200
    report("limits", "; ".join(figures))
