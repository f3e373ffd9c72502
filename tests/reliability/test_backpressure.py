"""Back-pressure: a full queue answers 429 at once (never a hang), and per-key rate
limits (requests and tokens per minute) answer 429 with OpenAI's x-ratelimit-* headers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import closing

import httpx
import pytest

from starchart.api.app import create_app
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.registry import EMBEDDED_NAME
from starchart.settings import Settings
from starchart.store import Store

from tests.conftest import LiveServer, free_port
from tests.e2e.test_store_durability import ServeProcess
from tests.reliability.streams import StreamResult, astream

ASK = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}


def test_past_the_queue_limit_429_with_retry_after_never_a_hang(
        serve: Callable[..., ServeProcess], report: Callable[[str, str], None]) -> None:
    server = serve("--parallel", "1", "--max-queue", "2")
    body = {"messages": [{"role": "user", "content": "Tell a story."}], "max_tokens": 40,
            "ignore_eos": True}

    async def burst() -> list[StreamResult]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            started = time.monotonic()
            results = await asyncio.gather(*(astream(client, "/v1/chat/completions", body)
                                             for _ in range(12)))
            for result in results:
                result.ended_at -= started
            return list(results)

    results = asyncio.run(burst())
    served = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status == 429]
    assert len(served) + len(refused) == 12
    assert 3 <= len(served) < 12, "1 running + 2 waiting at least; the rest refused"
    assert all(r.done and r.finish_reason == "length" for r in served)
    slowest_refusal = max(r.ended_at for r in refused)
    assert slowest_refusal < 5, "a refusal is immediate"
    assert all('"rate_limit_exceeded"' in r.body for r in refused)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.post("/v1/chat/completions", json=ASK)  # the queue has drained
        assert response.status_code == 200
    report("back-pressure (queue)", f"12 concurrent streams on --parallel 1 --max-queue 2:"
           f" {len(served)} served, {len(refused)} got 429 + Retry-After, the slowest refusal"
           f" in {slowest_refusal * 1000:.0f} ms")


def test_retry_after_header_on_a_full_queue(serve: Callable[..., ServeProcess]) -> None:
    server = serve("--parallel", "1", "--max-queue", "0")
    body = {"messages": [{"role": "user", "content": "Tell a story."}], "max_tokens": 1000,
            "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as running:
            assert running.status_code == 200
            lines = running.iter_lines()  # kept: a dropped iterator closes the response
            next(lines)
            deadline = time.monotonic() + 30
            while client.get("/v1/stats").json()["models"][EMBEDDED_NAME]["running"] != 1:
                assert time.monotonic() < deadline, "the first request never ran"
                time.sleep(0.05)
            refused = client.post("/v1/chat/completions", json=ASK)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1


@pytest.fixture
def limited(tmp_path: pytest.TempPathFactory, engine: LlamaCppEngine,
            request: pytest.FixtureRequest) -> Iterator[tuple[LiveServer, list[str]]]:
    settings = Settings(home=tmp_path / "home", n_ctx=2048, **request.param)
    with closing(Store.open(settings)) as store:
        keys = [store.keys.create(name)[1] for name in ("a", "b")]
    with LiveServer(create_app(settings, engines=[engine]), free_port()) as server:
        yield server, keys


def _post(server: LiveServer, key: str) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=ASK, timeout=60,
                      headers={"Authorization": f"Bearer {key}"})


@pytest.mark.parametrize("limited", [{"rate_limit_requests": 3}], indirect=True)
def test_requests_per_minute_per_key(limited: tuple[LiveServer, list[str]],
                                     report: Callable[[str, str], None]) -> None:
    server, (a, b) = limited
    remaining = []
    for _ in range(3):
        response = _post(server, a)
        assert response.status_code == 200, response.text
        assert response.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(int(response.headers["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0]
    refused = _post(server, a)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert _post(server, b).status_code == 200, "another key has its own budget"
    # Reading (GET) is not limited.
    listed = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {a}"})
    assert listed.status_code == 200
    report("rate limit (requests)", "--rate-limit-requests 3: the 4th POST of a key in a"
           f" minute got 429, Retry-After {refused.headers['Retry-After']} s; another key"
           " unaffected")


@pytest.mark.parametrize("limited", [{"rate_limit_tokens": 40}], indirect=True)
def test_tokens_per_minute_per_key(limited: tuple[LiveServer, list[str]],
                                   report: Callable[[str, str], None]) -> None:
    server, (a, _) = limited
    spent = 0
    for _ in range(20):
        response = _post(server, a)
        if response.status_code == 429:
            break
        assert response.status_code == 200, response.text
        spent += response.json()["usage"]["total_tokens"]
    assert response.status_code == 429 and spent >= 40, "the key used up its tokens"
    assert response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert response.headers["x-ratelimit-limit-tokens"] == "40"
    assert "tokens per minute" in response.json()["error"]["message"]
    report("rate limit (tokens)", f"--rate-limit-tokens 40: 429 once {spent} tokens were"
           f" used, Retry-After {response.headers['Retry-After']} s")
