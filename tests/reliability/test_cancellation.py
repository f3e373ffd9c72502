"""Cancellation: clients that leave mid-stream (HTTP and WebSocket) stop their work.

The engine's generated-token counter stops within a few tokens of the last
disconnect, the queue drains, and nothing is left behind: no running sequence or
KV cells, no request task, turn task or connection, no file descriptor or thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from websockets.sync.client import connect

from starchart.engines.llamacpp import LlamaCppEngine
from starchart.registry import EMBEDDED_NAME

from tests.conftest import LiveServer
from tests.e2e.test_store_durability import ServeProcess

WAVES, PER_WAVE = 5, 10  # 50 clients: half HTTP, half WebSocket, 10 at a time
LONG = {"max_tokens": 1500, "ignore_eos": True}
CHUNKS = 3  # read this many pieces of the answer, then leave


def _http_client(url: str, left: list[float]) -> None:
    body = {"messages": [{"role": "user", "content": "Tell me a long story."}],
            "stream": True, **LONG}
    with httpx.Client(base_url=url, timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            seen = 0
            for line in response.iter_lines():
                seen += line.startswith("data: {")
                if seen > CHUNKS:
                    break
    left.append(time.monotonic())


def _ws_client(url: str, conversation: str, left: list[float]) -> None:
    ws_url = url.replace("http://", "ws://") + f"/v1/conversations/{conversation}/ws"
    with connect(ws_url) as ws:
        ws.send(json.dumps({"content": "Tell me a very long story.", **LONG}))
        seen = 0
        while seen < CHUNKS:
            frame = json.loads(ws.recv(timeout=60))
            assert frame["type"] in ("queue", "delta"), frame  # "queue": its place in line
            seen += frame["type"] == "delta"
    left.append(time.monotonic())


def _settle(engine: LlamaCppEngine, app: Any) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
            engine.queued or app.state.conversation_chat._running
            or app.state.drain.connections):
        time.sleep(0.02)


def _tcp_ports() -> dict[str, tuple[int, int]]:
    """Socket inode -> (local port, remote port) of every TCP socket in this network
    namespace (``/proc/net/tcp``: ``local_address`` and ``rem_address`` end ``:PORT``
    in hex, the inode is the tenth column)."""
    ports = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in rows.readlines()[1:]:
                cols = row.split()
                ports[cols[9]] = (int(cols[1].rsplit(":", 1)[1], 16),
                                  int(cols[2].rsplit(":", 1)[1], 16))
    return ports


def _counts(engine: LlamaCppEngine, server: LiveServer) -> dict[str, int]:
    state = server.server.server_state
    targets = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}")]
    sockets = [t[len("socket:["):-1] for t in targets if t.startswith("socket:[")]
    ports = _tcp_ports()
    # This process's sockets with the server's port at either end: its listener, the
    # connections it accepted and the test's clients' connections to it.
    on_port = sum(server.port in ports.get(inode, ()) for inode in sockets)
    return {"fds": len(targets), "sockets": len(sockets), "server_sockets": on_port,
            "other_sockets": len(sockets) - on_port,
            # The store opens one SQLite connection per worker thread, as the pool grows.
            "other_fds": sum(not t.startswith("socket:") and "starchart.db" not in t
                             for t in targets), "threads": threading.active_count(),
            "queued": engine.queued, "kv_cells": sum(engine.resident_tokens()),
            "turn_tasks": len(server.app.state.conversation_chat._running),
            "request_tasks": len(state.tasks), "connections": len(state.connections)}


def test_50_clients_leaving_mid_stream_stop_their_work_and_leak_nothing(
        live_server: LiveServer, engine: LlamaCppEngine,
        report: Callable[[str, str], None]) -> None:
    url, app = live_server.url, live_server.app
    conversations = [httpx.post(url + "/v1/conversations", json={"system_prompt": ""}).json()[
        "id"] for _ in range(WAVES * PER_WAVE // 2)]
    overshoots: list[int] = []
    before: dict[str, int] = {}
    for wave in range(WAVES):
        left: list[float] = []
        threads = [threading.Thread(target=_http_client, args=(url, left))
                   for _ in range(PER_WAVE // 2)]
        threads += [threading.Thread(target=_ws_client, args=(url, conv, left))
                    for conv in conversations[wave * PER_WAVE // 2:(wave + 1) * PER_WAVE // 2]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert len(left) == PER_WAVE, "every client read its chunks and left"
        at_last_disconnect = engine.tokens_generated
        _settle(engine, app)
        settled = engine.tokens_generated
        time.sleep(0.3)
        assert engine.tokens_generated == settled, "generation goes on after everyone left"
        overshoots.append(settled - at_last_disconnect)
        if wave == 0:  # the first wave warms up (threads, pools, caches)
            before = _counts(engine, live_server)
    after = _counts(engine, live_server)
    assert after["queued"] == after["kv_cells"] == after["turn_tasks"] == 0, after
    assert after["request_tasks"] == after["connections"] == 0, after
    # A leak would grow with the 40 clients after the warm-up; the worker-thread pool
    # (and its SQLite connections) grows to its bound of min(32, cores + 4) threads.
    # Sockets on the server's port: its listener alone, after the warm-up and at the end.
    # The process's other sockets may only shrink: earlier tests in this process can
    # leave a client's kept-alive connection behind (an unclosed client), closed when
    # the garbage collector takes it, which may be during this test.
    assert before["server_sockets"] == after["server_sockets"] == 1, (before, after)
    assert after["other_sockets"] <= before["other_sockets"], (before, after)
    assert after["other_fds"] == before["other_fds"], (before, after)
    assert after["threads"] <= before["threads"] + 6, (before, after)
    for conv in conversations:
        reply = httpx.get(f"{url}/v1/conversations/{conv}").json()["messages"][1]
        assert reply["incomplete"] is True and reply["content"]
    # Each sequence may decode the step in flight when its client leaves.
    assert max(overshoots) <= 2 * PER_WAVE, overshoots
    report("cancellation", f"{WAVES * PER_WAVE} clients left mid-stream (half HTTP, half"
           f" WebSocket, {PER_WAVE} at a time): tokens generated after the last disconnect of a"
           f" wave at most {max(overshoots)} ({PER_WAVE} sequences), then 0; queue, KV cells,"
           f" tasks, connections 0; sockets on its port {before['server_sockets']} ->"
           f" {after['server_sockets']}, others {before['other_sockets']} ->"
           f" {after['other_sockets']}, fds"
           f" {before['fds']} -> {after['fds']} (SQLite per worker thread), threads"
           f" {before['threads']} -> {after['threads']}")


def test_a_client_leaving_is_one_info_line_and_its_tokens_are_counted(
        serve: Callable[..., ServeProcess]) -> None:
    server = serve("--log-level", "info")
    body = {"messages": [{"role": "user", "content": "Tell me a long story."}], **LONG}
    for _ in range(3):
        with contextlib.suppress(httpx.TimeoutException):
            httpx.post(server.url + "/v1/chat/completions", json=body, timeout=1.5)
    _http_client(server.url, [])  # and one stream
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = httpx.get(server.url + "/v1/stats").json()
        if stats["requests_in_flight"] == 0 and stats["models"][EMBEDDED_NAME]["running"] == 0:
            break
        time.sleep(0.05)
    log = (server.home / "server.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    assert log.count("client left before the answer to") == 3, log[-3000:]
    # Tokens generated for the requests whose clients left are generated all the same.
    assert stats["completion_tokens_total"] >= 4, stats
