"""The transformers engine behind the real HTTP server: a client that hangs up
mid-stream has its sequence dropped from the batch."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from starchart.engines.transformers import TransformersEngine


@pytest.fixture(scope="module")
def engine(tiny: TransformersEngine) -> TransformersEngine:
    """Overrides the llama.cpp ``engine``: ``live_server`` serves the tiny Llama."""
    return tiny


def test_a_client_that_hangs_up_leaves_the_batch(live_server: Any,
                                                  engine: TransformersEngine) -> None:
    forwards = 0

    def count(*_: object) -> None:
        nonlocal forwards
        forwards += 1

    body = {"prompt": "x", "max_tokens": 1000, "ignore_eos": True, "temperature": 0,
            "stream": True}
    hook = engine._model.model.register_forward_hook(count)
    try:
        with httpx.Client(base_url=live_server.url, timeout=30) as client:
            with client.stream("POST", "/v1/completions", json=body) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        break  # the first chunk is in: hang up
        deadline = time.monotonic() + 10
        while engine.active_requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.active_requests == 0
        settled = forwards
        time.sleep(0.3)
        assert forwards == settled
        assert forwards < 500
    finally:
        hook.remove()
