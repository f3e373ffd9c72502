"""Drive a server at each concurrency level and build the report document."""

from __future__ import annotations

import asyncio
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from tqdm import tqdm

from starchart import __version__
from starchart.bench.client import Sample, chat_body, send
from starchart.bench.prompts import Prompt
from starchart.bench.stats import summarize

SCHEMA_ID = "starchart-bench/1"


@dataclass(frozen=True)
class BenchConfig:
    url: str  # the server's base URL, without /v1
    model: str | None
    concurrency: tuple[int, ...]
    requests: int
    max_tokens: int
    temperature: float
    timeout: float
    prompts: Sequence[Prompt]
    prompts_source: str
    api_key: str | None = None
    warmup: int = 1
    self_started: bool = False
    progress: bool = True

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + "/v1/chat/completions"


def _client(config: BenchConfig, concurrency: int) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(headers=headers, limits=limits, timeout=config.timeout)


async def run_level(config: BenchConfig, concurrency: int,
                    on_done: Callable[[Sample], None] = lambda s: None) -> list[Sample]:
    """``config.requests`` requests, ``concurrency`` in flight at a time; prompt i of the
    set for request i (cycling), so every server and level sees the same sequence."""
    bodies = [chat_body(config.model, config.prompts[i % len(config.prompts)].messages,
                        config.max_tokens, config.temperature) for i in range(config.requests)]
    pending = iter(bodies)
    samples: list[Sample] = []

    async def worker(client: httpx.AsyncClient) -> None:
        for body in pending:  # one shared iterator: each body goes to exactly one worker
            sample = await send(client, config.endpoint, body, config.timeout)
            samples.append(sample)
            on_done(sample)

    async with _client(config, concurrency) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return samples


async def discover_model(config: BenchConfig) -> str | None:
    """The first model ``/v1/models`` lists, or None (the request then names none)."""
    try:
        async with _client(config, 1) as client:
            response = await client.get(config.url.rstrip("/") + "/v1/models")
            return str(response.json()["data"][0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return None


def _ticker(bar: tqdm[Any]) -> Callable[[Sample], None]:
    errors = 0

    def tick(sample: Sample) -> None:
        nonlocal errors
        errors += not sample.ok
        bar.set_postfix(errors=errors, refresh=False)
        bar.update(1)

    return tick


async def run_bench(config: BenchConfig) -> dict[str, Any]:
    """The whole run: warm-up (not counted), then each level in turn -> the JSON document."""
    started = datetime.now(UTC)
    if config.warmup:
        warm = BenchConfig(**{**config.__dict__, "requests": config.warmup})
        await run_level(warm, 1)
    levels = []
    for concurrency in config.concurrency:
        bar = tqdm(total=config.requests, desc=f"concurrency {concurrency}", unit="req",
                   file=sys.stderr, disable=not config.progress, leave=True)
        try:
            samples = await run_level(config, concurrency, _ticker(bar))
        finally:
            bar.close()
        levels.append(summarize(concurrency, samples))
    return {
        "schema": SCHEMA_ID,
        "started_at": started.isoformat(timespec="seconds"),
        "client": {"starchart": __version__, "python": platform.python_version(),
                   "platform": platform.platform()},
        "target": {"url": config.url, "model": config.model,
                   "self_started": config.self_started},
        "run": {"requests_per_level": config.requests, "max_tokens": config.max_tokens,
                "temperature": config.temperature, "timeout_s": config.timeout,
                "warmup_requests": config.warmup, "prompts": config.prompts_source,
                "prompt_count": len(config.prompts)},
        "levels": levels,
    }
