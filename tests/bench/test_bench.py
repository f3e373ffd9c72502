"""`starchart bench` against our own server (the embedded model), against our app
with a scripted engine that fails, and against a peer that misbehaves on the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
from starlette.types import Receive, Scope, Send

from starchart.api.app import create_app
from starchart.bench.own_server import child_environment
from starchart.bench.prompts import default_prompts, load_prompts
from starchart.bench.report import render_table, schema
from starchart.bench.runner import BenchConfig, run_bench
from starchart.bench.stats import percentile
from starchart.cli import main
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port
from tests.scripted_engine import scripted


def bench(url: str, model: str | None = None, *, concurrency: tuple[int, ...] = (1,),
          requests: int = 3, timeout: float = 60, max_tokens: int = 8) -> dict:
    config = BenchConfig(url=url, model=model, concurrency=concurrency, requests=requests,
                         max_tokens=max_tokens, temperature=0, timeout=timeout,
                         prompts=default_prompts(), prompts_source="default", warmup=0,
                         progress=False)
    return asyncio.run(run_bench(config))


def test_against_our_server_tokens_match_the_servers_usage(
        live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    stats = live_server.app.state.service.stats
    before_requests, before_tokens = stats.requests, stats.completion_tokens
    code = main(["bench", "--url", live_server.url, "--concurrency", "1,4", "--requests", "4",
                 "--max-tokens", "8", "--warmup", "0", "--json", "--no-progress"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, schema())
    assert doc["target"]["model"] == "smollm2-135m-instruct"  # found through /v1/models
    assert [level["concurrency"] for level in doc["levels"]] == [1, 4]
    for level in doc["levels"]:
        assert level["errors"] == {} and level["succeeded"] == level["requests"] == 4
        assert level["token_source"] == "usage"
        assert 0 < level["completion_tokens"] <= 4 * 8
        assert level["prompt_tokens"] > 4  # the default set starts with short and long prompts
        ttft, itl = level["ttft_ms"], level["inter_token_ms"]
        assert 0 < ttft["p50"] <= ttft["p90"] <= ttft["p99"]
        assert 0 < itl["p50"] <= itl["p99"]
        assert level["decode_tokens_per_s"]["aggregate"] > 0
        assert level["requests_per_s"] > 0
    # Every token the report counts is one the server says it generated, and no more.
    assert stats.requests - before_requests == 8
    assert sum(level["completion_tokens"] for level in doc["levels"]) == \
        stats.completion_tokens - before_tokens


def test_a_named_model_is_sent_as_its_name(
        live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    # --model is repeatable for `serve`; bench sends the one name it was given (it once
    # sent the list, and every request was a 400).
    code = main(["bench", "--url", live_server.url, "--model", "smollm2-135m-instruct",
                 "--concurrency", "1", "--requests", "1", "--max-tokens", "4", "--warmup",
                 "0", "--json", "--no-progress"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, schema())
    assert doc["target"]["model"] == "smollm2-135m-instruct"
    assert doc["levels"][0]["errors"] == {} and doc["levels"][0]["succeeded"] == 1


def test_without_url_it_starts_its_own_server_and_stops_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "one.txt"
    prompts.write_text("Name the capital of Germany.\n", "utf-8")
    code = main(["bench", "--concurrency", "1", "--requests", "2", "--max-tokens", "4",
                 "--warmup", "0", "--prompts", str(prompts), "--n-ctx", "512", "--json",
                 "--no-progress"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, schema())
    assert doc["target"]["self_started"] is True
    assert doc["target"]["model"] == "smollm2-135m-instruct"
    assert doc["run"]["prompts"] == str(prompts) and doc["run"]["prompt_count"] == 1
    (level,) = doc["levels"]
    assert level["errors"] == {} and level["completion_tokens"] == 2 * 4
    with pytest.raises(httpx.ConnectError):  # stopped afterwards
        httpx.get(doc["target"]["url"] + "/health", timeout=2)


def test_the_table_names_every_level_and_error(live_server: LiveServer) -> None:
    doc = bench(live_server.url, concurrency=(1, 2), requests=2, max_tokens=4)
    doc["levels"][1]["errors"] = {"http_503": 1}
    doc["levels"][1]["error_examples"] = {"http_503": "model is loading"}
    table = render_table(doc)
    assert "TTFT p50" in table and "(usage)" in table
    assert "concurrency 2: 1 × http_503: model is loading" in table


@pytest.fixture
def failing_server(settings: Settings) -> Iterator[LiveServer]:
    engines = [scripted("refuse"), scripted("cut"), scripted("answer")]
    for engine in engines:
        engine.load()
    with LiveServer(create_app(settings, engines=engines), free_port()) as server:
        yield server


def test_500s_and_streams_cut_mid_way_are_counted_and_the_run_completes(
        failing_server: LiveServer) -> None:
    refused = bench(failing_server.url, "scripted-refuse", concurrency=(1, 2), requests=3)
    for level in refused["levels"]:
        assert level["errors"] == {"http_500": 3} and level["succeeded"] == 0
        assert "refusing on purpose" in level["error_examples"]["http_500"]
        assert level["token_source"] == "none" and level["ttft_ms"]["p50"] is None
    cut = bench(failing_server.url, "scripted-cut", concurrency=(2,), requests=4)
    (level,) = cut["levels"]
    assert level["errors"] == {"stream_error": 4} and level["succeeded"] == 0
    answered = bench(failing_server.url, "scripted-answer", concurrency=(2,), requests=4)
    (level,) = answered["levels"]
    assert level["errors"] == {} and level["completion_tokens"] == 4 * 6
    for doc in (refused, cut, answered):
        jsonschema.validate(doc, schema())


async def misbehaving_peer(scope: Scope, receive: Receive, send: Send) -> None:
    """A server that gets the protocol wrong in one way per path prefix."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    if path == "/ready":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    sse = [(b"content-type", b"text/event-stream")]
    good = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n'
    if path.startswith("/silent/"):
        await asyncio.sleep(3600)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]
                if path.startswith("/json/") else sse})
    if path.startswith("/garbled/"):
        await send({"type": "http.response.body", "body": good + b"data: {\"choi\n\n",
                    "more_body": True})
    elif path.startswith("/ends/"):  # a clean end of body, but no [DONE] nor finish_reason
        await send({"type": "http.response.body", "body": good, "more_body": True})
    elif path.startswith("/nodone/"):  # finish_reason, then the end (as transformers serve)
        finish = b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
        await send({"type": "http.response.body", "body": good + finish, "more_body": True})
    elif path.startswith("/drops/"):  # the connection goes away mid-stream
        await send({"type": "http.response.body", "body": good, "more_body": True})
        raise RuntimeError("dropping the connection on purpose")
    elif path.startswith("/json/"):
        await send({"type": "http.response.body", "body": b'{"choices": []}',
                    "more_body": True})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def peer() -> Iterator[LiveServer]:
    with LiveServer(misbehaving_peer, free_port()) as server:
        yield server


@pytest.mark.parametrize("prefix,kind", [("garbled", "bad_sse"), ("ends", "truncated"),
                                         ("drops", "truncated"), ("json", "not_sse"),
                                         ("silent", "timeout")])
def test_wire_failures_are_classified(peer: LiveServer, prefix: str, kind: str) -> None:
    # Only the silent peer should ever reach the timeout, however busy the machine is.
    timeout = 0.5 if prefix == "silent" else 60
    doc = bench(f"{peer.url}/{prefix}", "m", concurrency=(1, 2), requests=2, timeout=timeout)
    for level in doc["levels"]:
        assert level["errors"] == {kind: 2}, level["error_examples"]
    jsonschema.validate(doc, schema())


def test_a_stream_ending_after_its_finish_reason_without_done_is_complete(
        peer: LiveServer) -> None:
    (level,) = bench(f"{peer.url}/nodone", "m", requests=2)["levels"]
    assert level["errors"] == {} and level["succeeded"] == 2
    assert level["token_source"] == "deltas" and level["completion_tokens"] == 2


def test_a_server_that_is_down_is_counted_as_connect_errors() -> None:
    doc = bench(f"http://127.0.0.1:{free_port()}", "m", concurrency=(1, 4), requests=4)
    assert [level["errors"] for level in doc["levels"]] == [{"connect": 4}, {"connect": 4}]


def test_default_prompt_set_spans_lengths_languages_and_turns() -> None:
    prompts = default_prompts()
    contents = [m["content"] for p in prompts for m in p.messages]
    assert any(len(p.messages) >= 5 for p in prompts)  # multi-turn histories
    assert any("\u4e00" <= ch <= "\u9fff" for c in contents for ch in c)  # Chinese
    assert any("```" in c or "def " in c for c in contents)  # code
    assert min(len(c) for c in contents) <= 5 and max(len(c) for c in contents) > 1500


def test_a_text_prompt_file_is_one_prompt_per_line(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("first question\n\nsecond question\n", "utf-8")
    assert [p.messages for p in load_prompts(path)] == [
        [{"role": "user", "content": "first question"}],
        [{"role": "user", "content": "second question"}]]


def test_percentile_is_linear_between_ranks() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([float(i) for i in range(101)], 90) == 90.0


def test_the_child_server_reads_back_every_forwarded_setting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A list setting (several models) once reached the child as "['a', 'b']".
    settings = Settings(model=["smollm2-135m-instruct", "other=/models/other.gguf"],
                        n_ctx=512, threads=1)
    for name, value in child_environment(settings, tmp_path).items():
        monkeypatch.setenv(name, value)
    again = Settings()
    assert again.model == settings.model and again.n_ctx == 512 and again.threads == 1
    assert again.home == tmp_path
