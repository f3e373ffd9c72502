"""Crash safety of the store: SIGKILL during 16 concurrent stored turns.

tests/e2e/test_store_durability.py covers one turn killed mid-reply and a clean
restart; this is the concurrent case: the database stays intact, every user turn
whose request was answered is there, and every reply cut by the kill is marked
incomplete and agrees with what its client read.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import httpx

from tests.e2e.test_store_durability import ServeProcess
from tests.reliability.streams import stream_in_thread

TURNS = 16


def test_sigkill_during_16_concurrent_turns(serve: Callable[..., ServeProcess],
                                            report: Callable[[str, str], None]) -> None:
    server = serve()
    url = server.url
    convs = [httpx.post(url + "/v1/conversations", json={"system_prompt": ""}).json()["id"]
             for _ in range(TURNS)]
    streams = [stream_in_thread(url, f"/v1/conversations/{conv}/messages", {
        "content": f"Tell me a very long story, number {i}.", "max_tokens": 900,
        "ignore_eos": True}) for i, conv in enumerate(convs)]
    for _, result in streams:
        assert result.first_chunk.wait(60)
    time.sleep(1.5)  # long enough for the periodic flushes to have written some text
    server.kill()
    for thread, _ in streams:
        thread.join(30)

    with sqlite3.connect(server.home / "starchart.db") as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    server.start()
    kept = 0
    for i, (conv, (_, result)) in enumerate(zip(convs, streams, strict=True)):
        messages = httpx.get(f"{url}/v1/conversations/{conv}").json()["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[0]["content"] == f"Tell me a very long story, number {i}."
        reply = messages[1]
        assert reply["incomplete"] is True and reply["finish_reason"] is None
        shorter, longer = sorted((reply["content"], result.text), key=len)
        assert longer.startswith(shorter), "what was stored and what was read: one reply"
        kept += len(reply["content"])
    report("store crash safety", f"SIGKILL during {TURNS} concurrent stored turns: integrity_check"
           f" ok, {TURNS}/{TURNS} user turns present, {TURNS} partial replies marked incomplete"
           f" ({kept} characters of them kept)")
