"""Shared fixtures: the real embedded model, a real server on loopback.

The engine is loaded once per session (it takes well under a second) and
shared by the in-process service, the live server and the tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from starchart.api.app import create_app
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.registry import EMBEDDED_NAME, embedded_gguf
from starchart.services.chat import ChatService
from starchart.settings import Settings

T = TypeVar("T")

FRANCE = [
    {"role": "system", "content": ""},
    {"role": "user", "content": "What is the capital of France?"},
]


# Knobs of the test harness itself, not settings of starchart.
HARNESS_VARIABLES = frozenset({"STARCHART_CHROMIUM"})


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
                         ) -> Path:
    """No developer's own ``STARCHART_*`` setting reaches a test, and nothing a test
    (or a server or CLI it starts: they inherit this environment) writes lands in
    the developer's data directory."""
    for name in list(os.environ):
        if name.startswith("STARCHART_") and name not in HARNESS_VARIABLES:
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("starchart-home")
    monkeypatch.setenv("STARCHART_HOME", str(home))
    return home


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", n_ctx=2048)


@pytest.fixture(scope="session")
def engine() -> Iterator[LlamaCppEngine]:
    eng = LlamaCppEngine(EMBEDDED_NAME, embedded_gguf(), n_ctx=2048)
    eng.load()
    yield eng
    eng.close()


@pytest.fixture
def service(settings: Settings, engine: LlamaCppEngine) -> ChatService:
    return ChatService(settings, {engine.info.id: engine})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn on 127.0.0.1:<free port> in a thread; stopped by the fixture."""

    def __init__(self, app: ASGIApp, port: int, *, wait_ready: bool = True) -> None:
        self.app = app
        self.ready_path = "/ready" if wait_ready else "/health"
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + self.ready_path, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("test server did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving (a test may do it early: a server going away mid-session)."""
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_server(settings: Settings, engine: LlamaCppEngine) -> Iterator[LiveServer]:
    with LiveServer(create_app(settings, engines=[engine]), free_port()) as server:
        yield server


@pytest.fixture
def one_slot_server(settings: Settings) -> Iterator[LiveServer]:
    """The embedded model generating one answer at a time: a second request queues."""
    engine = LlamaCppEngine(EMBEDDED_NAME, embedded_gguf(), n_ctx=2048, parallel=1)
    engine.load()
    try:
        with LiveServer(create_app(settings, engines=[engine]), free_port()) as server:
            yield server
    finally:
        engine.close()


@contextmanager
def model_kept_busy(url: str, max_tokens: int = 150) -> Iterator[None]:
    """A long answer streams (from /v1/chat/completions, in a thread) from the
    moment its first token arrives until it ends; the block waits for its end."""
    started = threading.Event()

    def long_answer() -> None:
        body = {"messages": [{"role": "user", "content": "Tell a long story."}],
                "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body,
                          timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    if choices[0].get("delta", {}).get("content"):
                        started.set()

    thread = threading.Thread(target=long_answer, daemon=True)
    thread.start()
    assert started.wait(60), "the long answer never started"
    try:
        yield
    finally:
        thread.join(120)


@pytest.fixture
def api(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=120) as client:
        yield client


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run async code from a sync test."""
    return asyncio.run(coro)
