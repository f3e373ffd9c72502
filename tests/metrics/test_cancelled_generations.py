"""A client that hangs up mid-answer: the tokens generated so far count in /metrics
exactly as in /v1/stats, with the outcome "cancelled", for a local model (the
embedded llama.cpp one) and for a remote one (relayed from an upstream)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from starchart.api.app import create_app
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.registry import EMBEDDED_NAME
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port
from tests.metrics.test_metrics import Samples, delta, scrape, value

LONG = {"messages": [{"role": "user", "content": "Count to a thousand."}],
        "max_tokens": 1500, "ignore_eos": True, "temperature": 0}
REMOTE = "far"


def stats_tokens(url: str) -> int:
    tokens: int = httpx.get(url + "/v1/stats").json()["completion_tokens_total"]
    return tokens


def leave_a_stream(url: str, model: str, pieces: int = 5) -> None:
    """Read ``pieces`` pieces of a long streamed answer, then hang up."""
    with httpx.Client(base_url=url, timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions",
                           json={**LONG, "model": model, "stream": True}) as response:
            assert response.status_code == 200
            seen = 0
            for line in response.iter_lines():
                seen += line.startswith('data: {"id"')
                if seen >= pieces:
                    break


def cancelled_once(url: str, model: str, before: Samples) -> Samples:
    """The scrape once the server has finished with the cancelled generation."""
    deadline = time.monotonic() + 30
    while True:
        after = scrape(url)
        ended = delta(before, after, "starchart_generations_total", model=model,
                      outcome="cancelled") == 1
        if ended and value(after, "starchart_requests_running", model=model) == 0:
            return after
        assert time.monotonic() < deadline, "the cancelled generation never ended"
        time.sleep(0.1)


def assert_counted_like_stats(url: str, model: str, leave: str) -> None:
    before, stats_before = scrape(url), stats_tokens(url)
    if leave == "stream":
        leave_a_stream(url, model)
    else:  # a whole answer the client gives up waiting for
        with httpx.Client(base_url=url, timeout=httpx.Timeout(30, read=1.5)) as client:
            with pytest.raises(httpx.ReadTimeout):
                client.post("/v1/chat/completions", json={**LONG, "model": model})
    after = cancelled_once(url, model, before)
    counted = stats_tokens(url) - stats_before
    assert 0 < counted < LONG["max_tokens"]
    assert delta(before, after, "starchart_completion_tokens_total", model=model) == counted
    for outcome in ("finished", "error"):
        assert delta(before, after, "starchart_generations_total", model=model,
                     outcome=outcome) == 0
    assert value(after, "starchart_requests_queued", model=model) == 0


@pytest.mark.parametrize("leave", ["stream", "whole answer"])
def test_a_cancelled_local_generation_counts_its_tokens(live_server: LiveServer,
                                                        leave: str) -> None:
    assert_counted_like_stats(live_server.url, EMBEDDED_NAME, leave)


@pytest.fixture
def front(tmp_path: Path, live_server: LiveServer, engine: LlamaCppEngine
          ) -> Iterator[LiveServer]:
    """A server relaying model "far" to ``live_server`` (the embedded model)."""
    settings = Settings(home=tmp_path / "front", n_ctx=2048,
                        upstream=[f"{REMOTE}={live_server.url}"],
                        upstream_model=[f"{REMOTE}={EMBEDDED_NAME}"])
    with LiveServer(create_app(settings, engines=[engine]), free_port()) as server:
        yield server


def test_a_cancelled_relayed_stream_counts_its_tokens(front: LiveServer) -> None:
    assert_counted_like_stats(front.url, REMOTE, "stream")
