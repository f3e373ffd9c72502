"""Several models in one real server on loopback (`serve --model a=PATH --model b=PATH`),
through the official openai client and plain HTTP: each request picks its model,
/v1/models shows states and memory, models load on demand (a stored conversation
turn too), unload under a budget or when idle, and a corrupt file spoils only itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from starchart.api.app import create_app
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.engines.pool import memory_estimate
from starchart.registry import EMBEDDED_NAME, embedded_gguf
from starchart.settings import Settings
from starchart.store import Store

from tests.conftest import LiveServer, free_port

pytestmark = pytest.mark.slow


def two_models(tmp_path: Path, **changes: Any) -> Settings:
    gguf = embedded_gguf()
    return Settings(home=tmp_path / "home", model=[f"a={gguf}", f"b={gguf}"], n_ctx=512,
                    parallel=2, **changes)


def serve(settings: Settings, *, wait_ready: bool = True) -> LiveServer:
    return LiveServer(create_app(settings), free_port(), wait_ready=wait_ready)


def states(api: httpx.Client) -> dict[str, str]:
    return {m["id"]: m["state"] for m in api.get("/v1/models").json()["data"]}


def wait_for(api: httpx.Client, want: dict[str, str], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while states(api) != want:
        assert time.monotonic() < deadline, f"states stayed {states(api)}, not {want}"
        time.sleep(0.05)


@pytest.fixture
def api_of() -> Iterator[Any]:
    clients: list[httpx.Client] = []

    def make(server: LiveServer, **kwargs: Any) -> httpx.Client:
        clients.append(httpx.Client(base_url=server.url, timeout=60, **kwargs))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def ask(client: openai.OpenAI, model: str) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=8, temperature=0)
    assert reply.model == model
    return reply.choices[0].message.content or ""


def test_two_models_serve_at_once_through_the_openai_client(
        tmp_path: Path, api_of: Any, gemma_gguf: Path) -> None:
    """SmolLM2 (chat) and Gemma 3 270M (a base model: completions) side by side."""
    settings = Settings(home=tmp_path / "home", n_ctx=512, parallel=2,
                        model=[EMBEDDED_NAME, f"gemma={gemma_gguf}"])
    with serve(settings) as server:
        api = api_of(server)
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        listed = {m.id: m for m in client.models.list().data}
        assert set(listed) == {EMBEDDED_NAME, "gemma"}
        for card in listed.values():
            extra = card.model_extra or {}
            assert extra["state"] == "loaded" and extra["memory_bytes"] > 50_000_000
        memory = {m: (listed[m].model_extra or {})["memory_bytes"] for m in listed}
        assert memory["gemma"] > memory[EMBEDDED_NAME]  # 270M parameters against 135M
        answers: dict[str, str] = {}

        def chat() -> None:
            answers["chat"] = ask(client, EMBEDDED_NAME)

        def complete() -> None:
            done = client.completions.create(model="gemma", prompt="The capital of Germany is",
                                             max_tokens=8, temperature=0)
            assert done.model == "gemma"
            answers["gemma"] = done.choices[0].text

        threads = [threading.Thread(target=chat), threading.Thread(target=complete)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert "Paris" in answers["chat"]
        assert answers["gemma"].startswith(" the capital of")  # the base model goes on
        default = api.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
        assert default.json()["model"] == EMBEDDED_NAME  # the first --model
        stats = api.get("/v1/stats").json()
        assert set(stats["models"]) == {EMBEDDED_NAME, "gemma"}
        assert stats["requests_total"] == 3
        metrics = api.get("/metrics").text
        assert 'starchart_model_loaded{model="gemma"} 1.0' in metrics
        assert 'starchart_generations_total{model="gemma",outcome=' in metrics
        with pytest.raises(openai.NotFoundError, match=f"served: {EMBEDDED_NAME}, gemma"):
            ask(client, "c")


def test_on_demand_models_load_on_their_first_request_a_stored_turn_too(
        tmp_path: Path, api_of: Any) -> None:
    with serve(two_models(tmp_path, load_on_demand=True)) as server:
        api = api_of(server)
        assert api.get("/ready").status_code == 200  # nothing to wait for: loads on demand
        assert states(api) == {"a": "unloaded", "b": "unloaded"}
        conversation = api.post("/v1/conversations", json={"model": "b"}).json()
        turn = api.post(f"/v1/conversations/{conversation['id']}/messages",
                        json={"content": "Hello", "max_tokens": 4, "temperature": 0,
                              "stream": False})
        assert turn.status_code == 200, turn.text
        assert turn.json()["message"]["model"] == "b" and turn.json()["message"]["content"]
        assert states(api) == {"a": "unloaded", "b": "loaded"}
        # two concurrent first requests for a: one load
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(api.post(
            "/v1/completions", json={"model": "a", "prompt": "Hi", "max_tokens": 2}
        ).status_code)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [200, 200]
        assert server.app.state.service.pool.model("a").loads == 1


def test_load_and_unload_need_a_key_and_make_room_under_a_small_budget(
        tmp_path: Path, api_of: Any) -> None:
    settings = two_models(tmp_path, load_on_demand=True)
    with closing(Store.open(settings)) as store:
        key = store.keys.create("ops")[1]
    size = memory_estimate(LlamaCppEngine("a", embedded_gguf(), n_ctx=512, parallel=2))
    settings = two_models(tmp_path, load_on_demand=True, memory_budget=str(size * 3 // 2))
    with serve(settings) as server:
        anonymous = api_of(server)
        assert anonymous.post("/v1/models/a/load").status_code == 401
        api = api_of(server, headers={"Authorization": f"Bearer {key}"})
        loaded = api.post("/v1/models/a/load").json()
        assert loaded["state"] == "loaded" and loaded["unloaded"] == []
        assert loaded["memory_bytes"] == size and loaded["object"] == "model.state"
        loaded = api.post("/v1/models/b/load").json()
        assert loaded["unloaded"] == ["a"]  # the budget holds one of them
        assert states(api) == {"a": "unloaded", "b": "loaded"}
        # a request for a loads it, unloading b (least recently used, idle)
        assert api.post("/v1/completions", json={"model": "a", "prompt": "Hi",
                                                 "max_tokens": 2}).status_code == 200
        assert states(api) == {"a": "loaded", "b": "unloaded"}
        unloaded = api.post("/v1/models/a/unload").json()
        assert unloaded == {"object": "model.state", "id": "a", "state": "unloaded",
                            "memory_bytes": size, "unloaded": [], "load_seconds": None}
        assert api.post("/v1/models/nope/load").status_code == 404
        schema = api.get("/openapi.json").json()
        assert "/v1/models/{name}/load" in schema["paths"]
        assert "ModelStateChange" in schema["components"]["schemas"]


def test_a_model_too_big_for_the_budget_gets_503_with_the_figures(
        tmp_path: Path, api_of: Any) -> None:
    with serve(two_models(tmp_path, load_on_demand=True, memory_budget="1MB")) as server:
        api = api_of(server)
        refused = api.post("/v1/chat/completions", json={
            "model": "b", "messages": [{"role": "user", "content": "Hi"}]})
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert error["code"] == "memory_budget_exceeded" and error["param"] == "model"
        needed = server.app.state.service.pool.model("b").memory_bytes
        assert error["memory"] == {"needed": needed, "budget": 1_000_000, "loaded": 0}
        assert "--memory-budget" in error["message"]


def test_keep_alive_unloads_an_idle_model(tmp_path: Path, api_of: Any) -> None:
    with serve(two_models(tmp_path, keep_alive="1s")) as server:  # both load at start-up
        api = api_of(server)
        started = time.monotonic()
        assert api.post("/v1/completions", json={"model": "a", "prompt": "Hi",
                                                 "max_tokens": 2}).status_code == 200
        wait_for(api, {"a": "unloaded", "b": "unloaded"}, seconds=10)
        assert time.monotonic() - started >= 1
        assert api.get("/ready").status_code == 200  # unloaded, but they load on demand
        # it comes back on its next request
        assert api.post("/v1/completions", json={"model": "a", "prompt": "Hi",
                                                 "max_tokens": 2}).status_code == 200
        assert server.app.state.service.pool.model("a").loads == 2


@pytest.mark.parametrize("on_demand", [False, True], ids=["at-start-up", "on-demand"])
def test_a_corrupt_model_file_leaves_the_others_serving(tmp_path: Path, api_of: Any,
                                                        on_demand: bool) -> None:
    corrupt = tmp_path / "broken.gguf"
    corrupt.write_bytes(embedded_gguf().read_bytes()[:200_000])  # truncated
    settings = Settings(home=tmp_path / "home", n_ctx=512, parallel=2,
                        load_on_demand=on_demand,
                        model=[f"good={embedded_gguf()}", f"bad={corrupt}"])
    with serve(settings, wait_ready=False) as server:
        api = api_of(server)
        if not on_demand:
            wait_for(api, {"good": "loaded", "bad": "failed"})
        assert api.post("/v1/completions", json={"model": "good", "prompt": "Hi",
                                                 "max_tokens": 2}).status_code == 200
        refused = api.post("/v1/completions", json={"model": "bad", "prompt": "Hi"})
        assert refused.status_code == 503
        assert "could not be loaded" in refused.json()["error"]["message"]
        assert str(corrupt) in refused.json()["error"]["message"]
        assert states(api) == {"good": "loaded", "bad": "failed"}
        cards = {m["id"]: m for m in api.get("/v1/models").json()["data"]}
        assert str(corrupt) in cards["bad"]["load_error"]
        assert api.post("/v1/completions", json={"model": "good", "prompt": "Hi",
                                                 "max_tokens": 2}).status_code == 200
        ready = api.get("/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "error"
        assert ready.json()["models"] == {"good": True, "bad": False}
        assert "bad: " in ready.json()["error"]
