"""Graceful shutdown: SIGTERM with streams in flight (a real `starchart serve` process)."""

from __future__ import annotations

import re
import signal
import sqlite3
import time
from collections.abc import Callable

import httpx

from tests.e2e.test_store_durability import ServeProcess
from tests.reliability.streams import stream_in_thread

TIMEOUT = 6.0  # --shutdown-timeout under test
LONG = {"max_tokens": 900, "ignore_eos": True, "temperature": 0}


def drain_lines(log: str) -> list[str]:
    """The drain's own INFO lines in a server's log (uvicorn's are not ours)."""
    return [line for line in log.splitlines()
            if line.startswith("INFO ") and "shutting down" in line]


def test_sigterm_refuses_new_requests_ends_streams_cleanly_and_exits_0(
        serve: Callable[..., ServeProcess], report: Callable[[str, str], None]) -> None:
    server = serve("--shutdown-timeout", str(TIMEOUT), "--log-level", "info")
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
    # One INFO line as the drain starts, one as it ends.
    started, ended = drain_lines(log)
    waiting = re.fullmatch(r"INFO shutting down: (\d) requests? in flight, up to 6 s"
                           r" \(--shutdown-timeout\) to finish; new ones get 503", started)
    assert waiting is not None and int(waiting[1]) in (4, 5), started  # the short one may be done
    assert re.fullmatch(r"INFO shutting down: --shutdown-timeout reached, 4 requests cut"
                        r" \(\d finished\)", ended), ended
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


def test_a_drain_that_finishes_in_time_says_so(serve: Callable[..., ServeProcess]) -> None:
    server = serve("--shutdown-timeout", "30", "--log-level", "info")
    thread, result = stream_in_thread(server.url, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Tell a story."}], "max_tokens": 40,
        "ignore_eos": True})
    assert result.first_chunk.wait(60), "the stream never started"
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    thread.join(40)
    assert server.proc.wait(timeout=40) == 0
    assert result.finish_reason == "length" and result.error is None
    log = (server.home / "server.log").read_text()
    assert drain_lines(log)[0] == ("INFO shutting down: 1 request in flight, up to 30 s"
                                   " (--shutdown-timeout) to finish; new ones get 503")
    assert re.fullmatch(r"INFO shutting down: every request finished, in \d+\.\d s",
                        drain_lines(log)[1]), log[-2000:]
    assert len(drain_lines(log)) == 2
