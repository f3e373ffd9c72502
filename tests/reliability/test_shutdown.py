"""Graceful shutdown: SIGTERM with streams in flight (a real `starchart serve` process)."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable

import httpx

from tests.e2e.test_store_durability import ServeProcess
from tests.reliability.streams import stream_in_thread

TIMEOUT = 6.0  # --shutdown-timeout under test
LONG = {"max_tokens": 900, "ignore_eos": True, "temperature": 0}


def test_sigterm_refuses_new_requests_ends_streams_cleanly_and_exits_0(
        serve: Callable[..., ServeProcess], report: Callable[[str, str], None]) -> None:
    server = serve("--shutdown-timeout", str(TIMEOUT))
    url = server.url
    convs = [httpx.post(url + "/v1/conversations", json={"system_prompt": ""}).json()["id"]
             for _ in range(2)]
    streams = [stream_in_thread(url, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": f"Tell a long story number {i}."}], **LONG})
        for i in range(2)]
    streams += [stream_in_thread(url, f"/v1/conversations/{conv}/messages", {
        "content": "Tell me a very long story.", **LONG}) for conv in convs]
    # A short one that has time to finish normally.
    streams.append(stream_in_thread(url, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}))
    for _, result in streams:
        assert result.first_chunk.wait(60), "a stream never started"

    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    time.sleep(0.5)  # the server notices within its 0.1 s tick
    refused = httpx.post(url + "/v1/chat/completions", timeout=10, json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "shutting_down"
    assert refused.headers.get("Retry-After")

    for thread, _ in streams:
        thread.join(TIMEOUT + 10)
    code = server.proc.wait(timeout=TIMEOUT + 10)
    exited = time.monotonic() - signalled
    log = (server.home / "server.log").read_text()
    for _, result in streams:
        assert result.cut is None, (result.cut, log[-3000:])
        assert result.complete, (result, log[-3000:])
        assert result.ended_at - signalled <= TIMEOUT + 0.5
    assert code == 0, log[-3000:]
    cut = [r for _, r in streams if r.error is not None]
    assert len(cut) == 4, "the long streams end with an error event"
    assert all(r.error is not None and r.error["code"] == "shutting_down" for r in cut)
    assert streams[-1][1].finish_reason is not None
    report("graceful shutdown", f"SIGTERM to exit 0 in {exited:.1f} s (--shutdown-timeout"
           f" {TIMEOUT:g}); 4 of 5 in-flight streams ended with an error event + [DONE],"
           " 1 finished; new requests 503")

    with sqlite3.connect(server.home / "starchart.db") as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    server.start()
    for conv, (_, result) in zip(convs, streams[2:4], strict=True):
        stored = httpx.get(f"{url}/v1/conversations/{conv}").json()["messages"]
        assert [m["role"] for m in stored] == ["user", "assistant"]
        reply = stored[1]
        assert reply["incomplete"] is True
        # Both start the same reply: what was stored, and what the client read.
        shorter, longer = sorted((reply["content"], result.text), key=len)
        assert shorter and longer.startswith(shorter)
