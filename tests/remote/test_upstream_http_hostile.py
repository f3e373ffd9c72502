"""The client to upstreams (``engines/upstream_http``) against what a hostile client
or upstream does: a real front relays to a raw upstream on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from starchart.api.app import create_app
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port
from tests.remote.raw_upstream import FIRST, RawUpstream
from tests.scripted_engine import scripted


@pytest.fixture(scope="module")
def upstream() -> Iterator[RawUpstream]:
    with RawUpstream() as raw:
        raw.body = lambda i: (FIRST, b"data: [DONE]\n\n")[i] if i < 2 else None
        yield raw


@pytest.fixture(scope="module")
def front(upstream: RawUpstream, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[LiveServer]:
    home: Path = tmp_path_factory.mktemp("home")
    settings = Settings(home=home, upstream=[f"raw={upstream.url}"],
                        upstream_first_token_timeout=10, upstream_idle_timeout=10)
    with LiveServer(create_app(settings, engines=[scripted("local")]), free_port()) as server:
        yield server


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("field", [
    b'"seed_extra":NaN', b'"seed_extra":-Infinity', b'"seed_extra":1e400',
    b'"logit_bias":{"1":NaN}', b'"user_extra":"\\ud800"', b'"\\udc00":1',
])
def test_a_body_json_cannot_carry_upstream_is_a_400(
        front: LiveServer, field: bytes, stream: bool) -> None:
    """Python's JSON parser takes NaN, Infinity and numbers too large for a double, and
    a lone surrogate is valid JSON: in a field the front passes on unchecked, none of
    them can be written to the upstream as JSON. The client is told so (a 400), not
    given a 500."""
    body = (b'{"model":"raw","stream":%s,"messages":[{"role":"user","content":"hi"}],%s}'
            % (b"true" if stream else b"false", field))
    response = httpx.post(front.url + "/v1/chat/completions", content=body, timeout=30,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
