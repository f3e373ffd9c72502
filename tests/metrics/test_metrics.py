"""GET /metrics: parsed with prometheus_client's own parser, moved by known runs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from starchart.api.app import create_app
from starchart.bench.prompts import default_prompts
from starchart.bench.runner import BenchConfig, run_bench
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port
from tests.scripted_engine import scripted

MODEL = "smollm2-135m-instruct"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(url: str, **headers: str) -> Samples:
    response = httpx.get(url + "/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def bench(url: str, model: str, concurrency: tuple[int, ...], requests: int) -> dict:
    config = BenchConfig(url=url, model=model, concurrency=concurrency, requests=requests,
                         max_tokens=8, temperature=0, timeout=120, prompts=default_prompts(),
                         prompts_source="default", warmup=0, progress=False)
    return asyncio.run(run_bench(config))


def test_counters_and_histograms_move_by_exactly_a_known_run(
        live_server: LiveServer, engine: LlamaCppEngine) -> None:
    before = scrape(live_server.url)
    doc = bench(live_server.url, MODEL, (1, 3), 3)
    after = scrape(live_server.url)
    n = sum(level["requests"] for level in doc["levels"])
    assert n == 6 and all(level["errors"] == {} for level in doc["levels"])
    prompt = sum(level["prompt_tokens"] for level in doc["levels"])
    completion = sum(level["completion_tokens"] for level in doc["levels"])
    # Tokens: exactly the usage the server reported to the client.
    assert delta(before, after, "starchart_prompt_tokens_total", model=MODEL) == prompt
    assert delta(before, after, "starchart_completion_tokens_total", model=MODEL) == completion
    assert delta(before, after, "starchart_http_requests_total", method="POST",
                 route="/v1/chat/completions", status="200") == n
    assert delta(before, after, "starchart_generations_total", model=MODEL,
                 outcome="finished") == n
    # One observation per request in the per-request histograms.
    for histogram in ("starchart_time_to_first_token_seconds",
                      "starchart_request_duration_seconds"):
        assert delta(before, after, f"{histogram}_count", model=MODEL) == n, histogram
        assert delta(before, after, f"{histogram}_bucket", model=MODEL, le="+Inf") == n
        assert delta(before, after, f"{histogram}_sum", model=MODEL) > 0
    # Inter-token gaps: one fewer than the pieces of text of each stream.
    gaps = delta(before, after, "starchart_inter_token_latency_seconds_count", model=MODEL)
    assert 0 < gaps <= completion - n
    assert delta(before, after, "starchart_http_request_duration_seconds_count",
                 route="/v1/chat/completions") == n
    assert value(after, "starchart_requests_running", model=MODEL) == 0
    assert value(after, "starchart_requests_queued", model=MODEL) == 0
    assert value(after, "starchart_model_weight_bytes", model=MODEL) == engine.info.weight_bytes
    # Each scrape is itself a request, counted by its route.
    assert delta(before, after, "starchart_http_requests_total", method="GET",
                 route="/metrics", status="200") == 1


def test_conversations_routes_and_404s_are_labelled_by_template(
        live_server: LiveServer) -> None:
    before = scrape(live_server.url)
    assert value(before, "starchart_conversations_stored") == 0
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        made = client.post("/v1/conversations", json={"title": "t"}).json()
        assert client.get(f"/v1/conversations/{made['id']}").status_code == 200
        assert client.get("/v1/conversations/conv_missing").status_code == 404
        assert client.get("/no/such/page.json").status_code == 404
    after = scrape(live_server.url)
    assert value(after, "starchart_conversations_stored") == 1
    route = "/v1/conversations/{conversation_id}"
    assert delta(before, after, "starchart_http_requests_total", method="GET", route=route,
                 status="200") == 1
    assert delta(before, after, "starchart_http_requests_total", method="GET", route=route,
                 status="404") == 1
    assert delta(before, after, "starchart_http_requests_total", method="GET",
                 route="(other)", status="404") == 1
    assert not any(made["id"] in str(key) for key in after)  # no id ever becomes a label


@pytest.fixture
def scripted_server(settings: Settings) -> Iterator[LiveServer]:
    # Not loaded beforehand: the app loads them, so model load time is measured.
    engines = [scripted("answer"), scripted("cut"), scripted("refuse")]
    with LiveServer(create_app(settings, engines=engines), free_port()) as server:
        yield server


def test_failures_load_time_and_one_registry_per_app(scripted_server: LiveServer,
                                                     live_server: LiveServer) -> None:
    before = scrape(scripted_server.url)
    for model in ("scripted-answer", "scripted-cut", "scripted-refuse"):
        assert value(before, "starchart_model_load_seconds", model=model) > 0
        assert value(before, "starchart_model_weight_bytes", model=model) == 1234
    bench(scripted_server.url, "scripted-answer", (2,), 4)
    bench(scripted_server.url, "scripted-cut", (1,), 2)
    bench(scripted_server.url, "scripted-refuse", (1,), 3)
    after = scrape(scripted_server.url)
    assert delta(before, after, "starchart_completion_tokens_total",
                 model="scripted-answer") == 4 * 6
    assert delta(before, after, "starchart_generations_total", model="scripted-cut",
                 outcome="error") == 2
    # Two words each before failing: generated all the same, and counted (as in /v1/stats).
    assert delta(before, after, "starchart_completion_tokens_total", model="scripted-cut") == 4
    # A refusal before streaming: a 500 on the route, no generation started.
    assert delta(before, after, "starchart_http_requests_total", method="POST",
                 route="/v1/chat/completions", status="500") == 3
    assert delta(before, after, "starchart_http_requests_total", method="POST",
                 route="/v1/chat/completions", status="200") == 4 + 2
    assert value(after, "starchart_requests_queued", model="scripted-cut") == 0
    assert value(after, "starchart_requests_running", model="scripted-cut") == 0
    # The other app in this process has its own registry: none of this shows there.
    other = scrape(live_server.url)
    assert value(other, "starchart_completion_tokens_total", model="scripted-answer") == 0
    assert value(other, "starchart_model_load_seconds", model="scripted-answer") == 0


def test_metrics_need_a_key_once_keys_exist_unless_metrics_open(settings: Settings) -> None:
    app = create_app(settings, engines=[scripted("answer")])
    _, secret = app.state.store.keys.create("scraper")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401 and refused.json()["error"]["param"] == "Authorization"
        allowed = client.get("/metrics", headers={"Authorization": f"Bearer {secret}"})
        assert allowed.status_code == 200 and "starchart_http_requests_total" in allowed.text
        # The refusal was counted too: the metrics middleware is outside the key check.
        assert value(parse(allowed.text), "starchart_http_requests_total", method="GET",
                     route="(other)", status="401") == 1
    opened = create_app(settings.model_copy(update={"metrics_open": True}),
                        engines=[scripted("answer")])
    with TestClient(opened, base_url="http://127.0.0.1") as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/v1/models").status_code == 401  # only /metrics is opened
