"""What reaches an upstream: the connections a front opens to it (keep-alive)
and the key it sends (``--upstream-key``), seen through a loopback tap in front
of a real starchart upstream that wants an API key; and API keys on the front
itself guarding its remote models."""

from __future__ import annotations

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
    with _front(tmp_path, engine, tap, upstream.key, upstream_health_interval=0.2) as front:
        client = _client(front)
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
