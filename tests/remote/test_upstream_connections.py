"""What reaches an upstream: the connections a front opens to it (keep-alive)
and the key it sends (``--upstream-key``), seen through a loopback tap in front
of a real starchart upstream that wants an API key; and API keys on the front
itself guarding its remote models."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from starchart.api.app import create_app
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.registry import EMBEDDED_NAME
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port
from tests.remote.tcp_tap import TcpTap

CAPITAL = [{"role": "user", "content": "Name the capital of Germany."}]


class Upstream:
    def __init__(self, server: LiveServer, key: str) -> None:
        self.server, self.key = server, key


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, engine: LlamaCppEngine
             ) -> Iterator[Upstream]:
    app = create_app(Settings(home=tmp_path_factory.mktemp("upstream"), n_ctx=2048),
                     engines=[engine])
    _, key = app.state.store.keys.create("front")  # the upstream now wants a key
    with LiveServer(app, free_port()) as server:
        yield Upstream(server, key)


@pytest.fixture
def tap(upstream: Upstream) -> Iterator[TcpTap]:
    tap = TcpTap(upstream.server.url)
    yield tap
    tap.close()


def _front(home: Path, engine: LlamaCppEngine, tap: TcpTap, key: str | None,
           **more: object) -> LiveServer:
    settings = Settings(home=home, n_ctx=2048, upstream=[f"far={tap.url}"],
                        upstream_model=[f"far={EMBEDDED_NAME}"], upstream_key=key,
                        upstream_connect_timeout=2, upstream_idle_timeout=20,
                        upstream_first_token_timeout=60, **more)
    return LiveServer(create_app(settings, engines=[engine]), free_port())


def _client(server: LiveServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, timeout=60, max_retries=0)


def test_sequential_requests_reuse_the_upstream_connection(
        tmp_path: Path, engine: LlamaCppEngine, upstream: Upstream, tap: TcpTap) -> None:
    # Probes every 0.2 s run beside the requests: one more connection at most.
    with (_front(tmp_path, engine, tap, upstream.key, upstream_health_interval=0.2) as front,
          _client(front) as client):
        for _ in range(3):
            reply = client.chat.completions.create(model="far", messages=CAPITAL,
                                                   max_tokens=4, temperature=0)
            assert reply.choices[0].message.content
            pieces = [c for c in client.chat.completions.create(
                model="far", messages=CAPITAL, max_tokens=4, temperature=0, stream=True)]
            assert pieces
            assert list(client.completions.create(model="far", prompt="Paris is",
                                                  max_tokens=4, stream=True))
        conv = httpx.post(front.url + "/v1/conversations",
                          json={"system_prompt": "", "model": "far"}).json()
        for _ in range(2):  # stored turns go through the Engine interface
            turn = httpx.post(f"{front.url}/v1/conversations/{conv['id']}/messages",
                              timeout=60, json={"content": "Hello", "stream": False,
                                                "max_tokens": 4})
            assert turn.status_code == 200, turn.text
    assert tap.accepted <= 2, f"{tap.requests}{tap.accepted} connections for 11 sequential requests"


def _everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)


def test_keys_on_a_front_of_a_remote_model_and_the_upstream_key_behind_it(
        tmp_path: Path, engine: LlamaCppEngine, upstream: Upstream, tap: TcpTap,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    front = _front(tmp_path, engine, tap, upstream.key)
    _, front_key = front.app.state.store.keys.create("client")  # the front wants one too
    with front, _client(front, front_key) as client:
        sent_before = len(tap.requests)
        for stream in (False, True):  # no key for the front: refused before any relaying
            refused = httpx.post(front.url + "/v1/chat/completions", json={
                "model": "far", "messages": CAPITAL, "max_tokens": 4, "stream": stream})
            assert refused.status_code == 401, refused.text
        with pytest.raises(openai.AuthenticationError), \
                _client(front, "sk-not-a-key") as stranger:
            stranger.chat.completions.create(model="far", messages=CAPITAL, max_tokens=4)
        assert all("GET /v1/models" in line for _, line in tap.requests[sent_before:])

        assert "far" in {m.id for m in client.models.list()}
        reply = client.chat.completions.create(model="far", messages=CAPITAL, max_tokens=8,
                                               temperature=0)
        assert "Berlin" in reply.choices[0].message.content
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="far", messages=CAPITAL, max_tokens=8, temperature=0, stream=True)
            if c.choices)
        assert "Berlin" in text
        conv = client.post("/conversations", cast_to=dict,
                           body={"system_prompt": "", "model": "far"})
        turn = client.post(f"/conversations/{conv['id']}/messages", cast_to=dict,
                           body={"content": "Name the capital of Germany.", "stream": False,
                                 "max_tokens": 8, "temperature": 0})
        assert "Berlin" in turn["message"]["content"]
    # The upstream saw starchart's key on every request, and never the client's.
    sent = tap.sent.decode("latin-1").lower()
    requests = sent.count(" http/1.1\r\n")
    assert requests >= 4 and sent.count(f"authorization: bearer {upstream.key}".lower()) == requests
    assert front_key.lower() not in sent
    logged = _everything_logged(caplog)
    assert upstream.key not in logged and front_key not in logged


def test_a_refused_upstream_key_is_a_502_that_never_shows_the_key(
        tmp_path: Path, engine: LlamaCppEngine, upstream: Upstream, tap: TcpTap,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-wrong-upstream-key-0123456789"
    with _front(tmp_path, engine, tap, wrong) as front:
        bodies = []
        for path, body in (("/v1/chat/completions", {"messages": CAPITAL}),
                           ("/v1/completions", {"prompt": "Paris is"})):
            for stream in (False, True):
                answer = httpx.post(front.url + path, timeout=60, json={
                    "model": "far", "max_tokens": 4, "stream": stream, **body})
                # The client's own key is fine: not a 401 that would send it looking there.
                assert answer.status_code == 502, answer.text
                assert "--upstream-key" in answer.json()["error"]["message"]
                bodies.append(answer.text)
        conv = httpx.post(front.url + "/v1/conversations",
                          json={"system_prompt": "", "model": "far"}).json()
        turn = httpx.post(f"{front.url}/v1/conversations/{conv['id']}/messages", timeout=60,
                          json={"content": "Hello", "stream": False, "max_tokens": 4})
        assert turn.status_code == 502, turn.text
        bodies += [turn.text, httpx.get(front.url + "/v1/models").text,
                   httpx.get(front.url + "/metrics").text]
    assert f"bearer {wrong}" in tap.sent.decode("latin-1").lower()  # it was sent upstream
    for body in bodies:
        assert wrong not in body
    assert wrong not in _everything_logged(caplog)


def test_a_kept_alive_connection_closed_as_a_request_goes_out_is_retried_on_a_new_one(
        tmp_path: Path, engine: LlamaCppEngine, upstream: Upstream, tap: TcpTap) -> None:
    # An upstream closes idle connections after its keep-alive timeout (uvicorn: 5 s);
    # a request sent on one at that moment finds it closed before any answer. That
    # upstream is not down: the request goes again, on a new connection.
    with (_front(tmp_path, engine, tap, upstream.key, upstream_health_interval=60) as front,
          _client(front) as client):
        remote = front.app.state.service.engines["far"]
        for stream in (False, True):
            assert client.chat.completions.create(model="far", messages=CAPITAL, max_tokens=4)
            dropped = len(tap.dropped)
            tap.drop_next_reuse()
            if stream:
                pieces = list(client.chat.completions.create(
                    model="far", messages=CAPITAL, max_tokens=4, stream=True))
                assert any(p.choices and p.choices[0].delta.content for p in pieces)
            else:
                assert client.chat.completions.create(
                    model="far", messages=CAPITAL, max_tokens=4).choices[0].message.content
            assert len(tap.dropped) == dropped + 1  # it did meet a closed connection
            assert remote.upstreams[0].healthy and remote.upstreams[0].outstanding == 0
