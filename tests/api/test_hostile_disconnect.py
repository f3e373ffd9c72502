"""Clients that leave mid-answer: one INFO line, no traceback; their tokens are counted."""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from starchart.engines.llamacpp import LlamaCppEngine

from tests.conftest import LiveServer

LONG = {"messages": [{"role": "user", "content": "Count to a thousand."}],
        "max_tokens": 1500, "ignore_eos": True, "temperature": 0}


def settled(engine: LlamaCppEngine) -> int:
    """The engine's token counter once it has stopped moving (the request was dropped)."""
    last = -1
    while engine.tokens_generated != last:
        last = engine.tokens_generated
        time.sleep(0.3)
    return last


def test_leaving_client_logs_info_and_its_tokens_reach_stats(
        live_server: LiveServer, engine: LlamaCppEngine,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    before = httpx.get(live_server.url + "/v1/stats").json()["completion_tokens_total"]
    engine_before = settled(engine)
    # A non-streamed answer: the client gives up waiting after 1.5 s and hangs up.
    with httpx.Client(base_url=live_server.url, timeout=httpx.Timeout(30, read=1.5)) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/chat/completions", json=LONG)
    generated = settled(engine) - engine_before
    assert 0 < generated < LONG["max_tokens"]  # stopped early
    stats = httpx.get(live_server.url + "/v1/stats").json()
    counted = stats["completion_tokens_total"] - before
    # Tokens held back (a possible stop string) or drawn after the disconnect are not
    # in the answer: a few at most.
    assert generated - 5 <= counted <= generated
    assert stats["requests_in_flight"] == 0
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not problems, [r.getMessage() for r in problems]
    left = [r for r in caplog.records if "client left" in r.getMessage()]
    assert len(left) == 1 and left[0].levelno == logging.INFO


def test_leaving_a_stream_counts_its_tokens(live_server: LiveServer,
                                            engine: LlamaCppEngine) -> None:
    before = httpx.get(live_server.url + "/v1/stats").json()["completion_tokens_total"]
    engine_before = settled(engine)
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        with client.stream("POST", "/v1/chat/completions",
                           json={**LONG, "stream": True}) as response:
            frames = 0
            for line in response.iter_lines():
                frames += line.startswith("data: ")
                if frames > 40:
                    break  # leave mid-answer: closing the response drops the connection
    generated = settled(engine) - engine_before
    assert 40 <= generated < LONG["max_tokens"]
    counted = httpx.get(live_server.url + "/v1/stats").json()["completion_tokens_total"] - before
    assert generated - 5 <= counted <= generated
