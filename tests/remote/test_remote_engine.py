"""A starchart server fronting two upstreams on loopback: llama-cpp-python's own
OpenAI server and another starchart, both serving the embedded model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from starchart.api.app import create_app
from starchart.cli import build_parser, settings_from
from starchart.doctor import upstreams
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.engines.remote import RemoteEngine
from starchart.engines.upstreams import upstream_models
from starchart.registry import EMBEDDED_NAME, embedded_gguf
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port
from tests.e2e.test_store_durability import ServeProcess
from tests.metrics.test_metrics import delta, scrape, value

CAPITAL = [{"role": "system", "content": ""},
           {"role": "user", "content": "Name the capital of Germany."}]


class LlamaCppServer:
    """`python -m llama_cpp.server` with the embedded GGUF on a free loopback port."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LlamaCppServer:
        with open(self.log, "ab") as out:  # the child has its own copy
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf()),
                 "--model_alias", EMBEDDED_NAME, "--host", "127.0.0.1",
                 "--port", str(self.port), "--n_ctx", "1024", "--verbose", "False",
                 # By default a new request (even a health probe's GET /v1/models)
                 # ends the one in flight with an early [DONE].
                 "--interrupt_requests", "False"],
                stdout=out, stderr=out, env={**os.environ, "OMP_WAIT_POLICY": "passive"})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/v1/models", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("llama_cpp.server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


@pytest.fixture(scope="module")
def llama_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    server = LlamaCppServer(tmp_path_factory.mktemp("llama") / "server.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def starchart_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    server = ServeProcess(tmp_path_factory.mktemp("upstream")).start()
    yield server
    server.stop()


def _front(home: Path, engine: LlamaCppEngine, *upstream: str, **more: object) -> LiveServer:
    settings = Settings(home=home, n_ctx=2048, upstream=list(upstream),
                        upstream_health_interval=0.3, upstream_connect_timeout=2,
                        upstream_idle_timeout=20, upstream_first_token_timeout=60, **more)
    return LiveServer(create_app(settings, engines=[engine]), free_port())


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, engine: LlamaCppEngine,
          llama_upstream: LlamaCppServer, starchart_upstream: ServeProcess
          ) -> Iterator[LiveServer]:
    with _front(tmp_path_factory.mktemp("front"), engine,
                f"both={llama_upstream.url},{starchart_upstream.url}",
                f"llama={llama_upstream.url}",
                f"ghost={starchart_upstream.url}",
                f"star={starchart_upstream.url}",
                f"dead=http://127.0.0.1:{free_port()}",
                upstream_model=[f"both={EMBEDDED_NAME}", f"llama={EMBEDDED_NAME}",
                                "ghost=no-such-model", f"dead={EMBEDDED_NAME}",
                                f"star={EMBEDDED_NAME}"]) as server:
        yield server


def _remote(server: LiveServer, name: str) -> RemoteEngine:
    engine = server.app.state.service.engines[name]
    assert isinstance(engine, RemoteEngine)
    return engine


@pytest.fixture
def client(front: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=front.url + "/v1", api_key="unused", timeout=60,
                       max_retries=0) as client:
        yield client


def test_answers_come_through_both_upstreams_streaming_and_not(
        front: LiveServer, client: openai.OpenAI) -> None:
    answers = []
    for _ in range(2):
        reply = client.chat.completions.create(model="both", messages=CAPITAL, temperature=0,
                                               max_tokens=16)
        assert reply.model == "both" and reply.usage.completion_tokens > 0
        answers.append(reply.choices[0].message.content)
        pieces = []
        usage = None
        for chunk in client.chat.completions.create(
                model="both", messages=CAPITAL, temperature=0, max_tokens=16, stream=True,
                stream_options={"include_usage": True}):
            assert chunk.model == "both"
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
        answers.append("".join(pieces))
        assert usage is not None and usage.completion_tokens > 0
    assert all("Berlin" in a for a in answers), answers
    served = [u.requests for u in _remote(front, "both").upstreams]
    assert all(n >= 1 for n in served), served  # both upstreams took requests
    text = client.completions.create(model="both", prompt="The capital of France is",
                                     max_tokens=4, temperature=0)
    assert text.model == "both" and text.choices[0].text


def test_models_lists_local_and_upstream_models(front: LiveServer) -> None:
    models = {m["id"]: m for m in httpx.get(front.url + "/v1/models").json()["data"]}
    assert {EMBEDDED_NAME, "both", "llama", "ghost", "dead"} <= set(models)
    assert models[EMBEDDED_NAME]["engine"] == "llamacpp"
    both = models["both"]
    assert both["engine"] == "remote" and both["upstream_model"] == EMBEDDED_NAME
    assert [u["healthy"] for u in both["upstreams"]] == [True, True]
    assert all(EMBEDDED_NAME in u["models"] for u in both["upstreams"])


def test_json_schema_and_tools_are_forwarded(client: openai.OpenAI) -> None:
    # Enums keep the tiny model's answers short enough to finish within max_tokens.
    cities = {"type": "string", "enum": ["Berlin", "Paris", "Rome"]}
    schema = {"type": "object", "properties": {"capital": cities}, "required": ["capital"]}
    reply = client.chat.completions.create(
        model="llama", messages=CAPITAL, temperature=0, max_tokens=40,
        response_format={"type": "json_object", "schema": schema})
    assert json.loads(reply.choices[0].message.content)["capital"] in cities["enum"]
    tool = {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": cities},
                       "required": ["city"]}}}
    reply = client.chat.completions.create(
        model="llama", temperature=0, max_tokens=40, tools=[tool],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in cities["enum"]


def test_upstream_errors_become_openai_errors(client: openai.OpenAI) -> None:
    # llama-cpp-python's server knows no "json_schema" response format and says so
    # with a 500: a 502 here, carrying its message.
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(
            model="llama", messages=CAPITAL, max_tokens=4,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}})
    assert failed.value.status_code == 502 and "json_object" in failed.value.message
    with pytest.raises(openai.NotFoundError) as rejected:  # the upstream's own 404
        client.chat.completions.create(model="ghost", messages=CAPITAL, max_tokens=4)
    assert "no-such-model" in rejected.value.message
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as unreachable:
            client.chat.completions.create(model="dead", messages=CAPITAL, max_tokens=4,
                                           stream=stream)
        assert unreachable.value.status_code == 502
        assert unreachable.value.body["code"] == "upstream_error"


def test_a_stored_conversation_on_a_remote_model(front: LiveServer) -> None:
    conv = httpx.post(front.url + "/v1/conversations",
                      json={"system_prompt": "", "model": "llama"}).json()
    answer = httpx.post(f"{front.url}/v1/conversations/{conv['id']}/messages", timeout=60,
                        json={"content": "Name the capital of Germany.", "stream": False,
                              "temperature": 0, "max_tokens": 16}).json()
    assert "Berlin" in answer["message"]["content"]
    assert answer["message"]["model"] == "llama" and not answer["message"]["incomplete"]
    assert answer["message"]["usage"]["completion_tokens"] > 0
    # llama-cpp-python's server streams no usage: each streamed piece is a token.
    with httpx.stream("POST", f"{front.url}/v1/conversations/{conv['id']}/messages",
                      timeout=60, json={"content": "And of France?", "stream": True,
                                        "temperature": 0, "max_tokens": 12}) as response:
        chunks = [json.loads(line) for line in _stream_lines(response) if line != "[DONE]"]
    pieces = sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content"))
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert pieces > 1 and usage[-1]["completion_tokens"] == pieces
    kept = httpx.get(f"{front.url}/v1/conversations/{conv['id']}").json()["messages"][-1]
    assert kept["usage"]["completion_tokens"] == pieces and not kept["incomplete"]


def test_remote_models_count_in_metrics_like_local_ones(
        front: LiveServer, client: openai.OpenAI) -> None:
    before = scrape(front.url)
    reply = client.chat.completions.create(model="llama", messages=CAPITAL, temperature=0,
                                           max_tokens=8)
    usage = None  # starchart sends the usage a client asks for
    for chunk in client.chat.completions.create(
            model="star", messages=CAPITAL, temperature=0, max_tokens=8, stream=True,
            stream_options={"include_usage": True}):
        usage = chunk.usage or usage
    assert usage is not None
    # llama-cpp-python's server streams no usage: each piece of text counts as a token.
    pieces = sum(1 for chunk in client.chat.completions.create(
        model="llama", messages=CAPITAL, temperature=0, max_tokens=8, stream=True)
        if chunk.choices and chunk.choices[0].delta.content)
    pieces += sum(1 for chunk in client.completions.create(
        model="llama", prompt="The capital of France is", max_tokens=6, temperature=0,
        stream=True) if chunk.choices and chunk.choices[0].text)
    with pytest.raises(openai.NotFoundError):  # the upstream's 404: an error outcome
        client.chat.completions.create(model="ghost", messages=CAPITAL, max_tokens=4)
    after = scrape(front.url)
    finished = {"llama": 3, "star": 1}
    for model, n in finished.items():
        assert delta(before, after, "starchart_generations_total", model=model,
                     outcome="finished") == n
        for histogram in ("starchart_time_to_first_token_seconds",
                          "starchart_request_duration_seconds"):
            assert delta(before, after, f"{histogram}_count", model=model) == n, histogram
        assert value(after, "starchart_requests_running", model=model) == 0
        assert value(after, "starchart_requests_queued", model=model) == 0
    assert delta(before, after, "starchart_generations_total", model="ghost",
                 outcome="error") == 1
    assert delta(before, after, "starchart_completion_tokens_total", model="llama") == (
        reply.usage.completion_tokens + pieces)
    assert delta(before, after, "starchart_prompt_tokens_total",
                 model="llama") == reply.usage.prompt_tokens
    assert delta(before, after, "starchart_completion_tokens_total",
                 model="star") == usage.completion_tokens
    assert delta(before, after, "starchart_prompt_tokens_total",
                 model="star") == usage.prompt_tokens
    assert delta(before, after, "starchart_inter_token_latency_seconds_count",
                 model="llama") > 0
    assert delta(before, after, "starchart_http_requests_total", method="POST",
                 route="/v1/chat/completions", status="200") == 3


def test_a_client_hanging_up_mid_stream_releases_the_upstream(
        front: LiveServer, starchart_upstream: ServeProcess) -> None:
    star = _remote(front, "star").upstreams[0]  # starchart honours ignore_eos: a long answer
    body = {"model": "star", "messages": CAPITAL, "stream": True, "max_tokens": 500,
            "ignore_eos": True}
    upstream_stats = starchart_upstream.url + "/v1/stats"
    before = httpx.get(upstream_stats).json()["completion_tokens_total"]
    with httpx.stream("POST", front.url + "/v1/chat/completions", json=body,
                      timeout=60) as response:
        assert response.status_code == 200, response.read()
        lines = _stream_lines(response)
        received = [next(lines) for _ in range(6)]  # the role chunk and five pieces
        assert not any(line == "[DONE]" or '"error"' in line for line in received), received
    # The client is gone mid-way: the front lets go of the upstream request ...
    deadline = time.monotonic() + 10
    while star.outstanding or front.app.state.service.stats.in_flight:
        assert time.monotonic() < deadline, "the upstream request was never closed"
        time.sleep(0.05)
    # ... and the upstream, its connection closed, stops generating long before 500 tokens.
    while (stats := httpx.get(upstream_stats).json())["requests_in_flight"]:
        assert time.monotonic() < deadline, "the upstream went on generating"
        time.sleep(0.05)
    assert stats["completion_tokens_total"] - before < 250, stats


def _stream_lines(response: httpx.Response) -> Iterator[str]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield line[6:]


def test_killing_an_upstream_fails_over_and_it_comes_back(
        tmp_path: Path, engine: LlamaCppEngine, llama_upstream: LlamaCppServer) -> None:
    victim = ServeProcess(tmp_path).start()
    try:
        with _front(tmp_path / "front", engine,
                    f"pair={llama_upstream.url},{victim.url}",
                    upstream_model=[f"pair={EMBEDDED_NAME}"]) as front:
            remote = _remote(front, "pair")
            on_victim = remote.upstreams[1]
            body = {"model": "pair", "messages": CAPITAL, "stream": True,
                    "max_tokens": 600, "ignore_eos": True}
            with httpx.Client(base_url=front.url, timeout=60) as http:
                streams = []
                # Open long streams until one is on the victim (least-outstanding
                # sends the second to whichever upstream the first did not take).
                while on_victim.outstanding == 0:
                    assert len(streams) < 2
                    stream = http.stream("POST", "/v1/chat/completions", json=body)
                    response = stream.__enter__()
                    lines = _stream_lines(response)
                    assert json.loads(next(lines))["choices"]
                    streams.append((stream, lines))
                victim_lines = streams[-1][1]
                victim.kill()
                rest = list(victim_lines)  # ends, and does not hang
                assert rest[-1] == "[DONE]"
                error = json.loads(rest[-2])["error"]
                assert error["code"] == "upstream_error", error
                for stream, _ in streams:
                    stream.__exit__(None, None, None)

                # New requests all go to the live upstream.
                for _ in range(3):
                    ok = http.post("/v1/chat/completions", json={
                        "model": "pair", "messages": CAPITAL, "max_tokens": 8})
                    assert ok.status_code == 200, ok.text
                assert not on_victim.healthy

                victim.start()  # same port
                deadline = time.monotonic() + 20
                while not on_victim.healthy:
                    assert time.monotonic() < deadline, "the upstream never came back"
                    time.sleep(0.1)
                before = on_victim.requests
                for _ in range(2):
                    assert http.post("/v1/chat/completions", json={
                        "model": "pair", "messages": CAPITAL,
                        "max_tokens": 8}).status_code == 200
                assert on_victim.requests > before  # back in rotation
    finally:
        victim.stop()


def test_doctor_shows_each_upstreams_reachability(llama_upstream: LlamaCppServer,
                                                  tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    args = build_parser()[0].parse_args(
        ["doctor", "--home", str(tmp_path), "--upstream", f"m={llama_upstream.url},{dead}",
         "--upstream-model", f"m={EMBEDDED_NAME}", "--upstream", f"other={llama_upstream.url}"])
    section = upstreams.section(upstream_models(settings_from(args)), timeout=5)
    assert [(c.status, c.detail.split(" ")[0].rstrip(":")) for c in section.checks] == [
        ("ok", llama_upstream.url), ("fail", dead), ("warn", llama_upstream.url)]
    assert EMBEDDED_NAME in section.facts["m"]["upstreams"][0]["models"]
    assert "Connect" in section.checks[1].detail  # the reason it is unreachable
