"""Load: many concurrent streaming clients on a real `starchart serve` process.

Every answer must be complete (a finish reason, then ``[DONE]``), none may fail,
and the server's memory after the run must be within 10% of after a warm-up.
`make soak` runs the ``soak`` ones: five times the requests, longer answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from tests.e2e.test_store_durability import ServeProcess
from tests.reliability.conftest import rss_bytes
from tests.reliability.streams import StreamResult, astream

QUESTIONS = ["What is the capital of France?", "Name a color.", "Say hello.",
             "Count to three.", "What is 2+2?", "Name an animal."]


async def _run(url: str, clients: int, requests: int, max_tokens: int) -> list[StreamResult]:
    todo = list(range(requests))
    results: list[StreamResult] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        async def worker() -> None:
            while todo:
                i = todo.pop()
                results.append(await astream(client, "/v1/chat/completions", {
                    "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                    "max_tokens": max_tokens, "temperature": 0.7, "seed": i}))

        await asyncio.gather(*(worker() for _ in range(clients)))
    return results


def _load(server: ServeProcess, clients: int, requests: int, max_tokens: int,
          engine: str, report: Callable[[str, str], None]) -> None:
    assert server.proc is not None
    asyncio.run(_run(server.url, clients, clients, max_tokens))  # warm-up: every slot used
    warm = rss_bytes(server.proc.pid)
    started = time.monotonic()
    results = asyncio.run(_run(server.url, clients, requests, max_tokens))
    elapsed = time.monotonic() - started
    after = rss_bytes(server.proc.pid)
    failed = [r for r in results if r.status != 200 or not r.done or r.finish_reason is None
              or r.error is not None or r.cut is not None]
    assert len(results) == requests
    assert not failed, failed[:3]
    growth = (after - warm) / warm
    report(f"load ({engine})", f"{clients} concurrent streaming clients, {requests} requests"
           f" (max_tokens {max_tokens}) in {elapsed:.1f} s: 0 failed, all with finish_reason"
           f" and [DONE]; server RSS {warm / 2**20:.0f} MiB after warm-up ->"
           f" {after / 2**20:.0f} MiB after ({growth:+.1%})")
    assert abs(growth) <= 0.10


def test_32_streaming_clients_200_requests_llamacpp(
        serve: Callable[..., ServeProcess], report: Callable[[str, str], None]) -> None:
    # Short answers keep `make test` bounded; the soak run asks for longer ones.
    _load(serve(), clients=32, requests=200, max_tokens=4, engine="llama.cpp", report=report)


@pytest.mark.slow
def test_8_streaming_clients_24_requests_transformers(
        serve: Callable[..., ServeProcess], report: Callable[[str, str], None]) -> None:
    # De-quantizing the GGUF for transformers takes a while on a busy machine.
    server = serve("--engine", "transformers", ready_timeout=300)
    _load(server, clients=8, requests=24, max_tokens=4, engine="transformers", report=report)


@pytest.mark.soak
def test_soak_32_streaming_clients_1000_requests_llamacpp(
        serve: Callable[..., ServeProcess], report: Callable[[str, str], None]) -> None:
    _load(serve(), clients=32, requests=1000, max_tokens=32, engine="llama.cpp (soak)",
          report=report)
