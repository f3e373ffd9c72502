"""A relay keeps no cookies: a cookie an upstream sets in its answer to one client's
request must not travel with the next request, which may be another user's (a
session cookie handed to everyone). The upstream is a real starchart server whose
answers all set a cookie, and which notes the Cookie header of every request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starchart.api.app import create_app
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.registry import EMBEDDED_NAME
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port


class SetsCookies:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cookies: list[bytes | None] = []  # each request's Cookie header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.cookies.append(dict(scope["headers"]).get(b"cookie"))

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                   (b"set-cookie", b"session=alice; Path=/")]}
            await send(message)

        await self.app(scope, receive, sending)


@pytest.fixture
def upstream(tmp_path: Path, engine: LlamaCppEngine) -> Iterator[tuple[str, SetsCookies]]:
    app = SetsCookies(create_app(Settings(home=tmp_path / "up", n_ctx=2048), engines=[engine]))
    with LiveServer(app, free_port()) as server:
        yield server.url, app


def test_no_cookie_set_by_an_upstream_is_sent_back(
        tmp_path: Path, engine: LlamaCppEngine, upstream: tuple[str, SetsCookies]) -> None:
    url, recorder = upstream
    settings = Settings(home=tmp_path / "front", n_ctx=2048, upstream=[f"far={url}"],
                        upstream_model=[f"far={EMBEDDED_NAME}"], upstream_health_interval=0.2)
    with LiveServer(create_app(settings, engines=[engine]), free_port()) as front:
        for stream in (False, True, False):
            answer = httpx.post(front.url + "/v1/chat/completions", timeout=60, json={
                "model": "far", "max_tokens": 2, "stream": stream,
                "messages": [{"role": "user", "content": "Hi"}]})
            assert answer.status_code == 200, answer.text
            assert "set-cookie" not in answer.headers  # nor passed on to the client
    sent = [c for c in recorder.cookies if c is not None]
    assert len(recorder.cookies) > 3 and not sent, sent
