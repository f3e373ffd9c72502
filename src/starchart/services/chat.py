"""The service layer: what the HTTP API and the terminal chat both call.

It picks the model, fills in the default system prompt and sampling
parameters, and keeps the live figures (requests in flight, tokens/s).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from starchart.chat.templates import Message
from starchart.engines.base import (
    Engine,
    Finish,
    SamplingParams,
    StreamEvent,
    TextDelta,
    TokenLogprob,
)
from starchart.engines.pool import ModelPool, PoolPolicy
from starchart.errors import NotFound
from starchart.metrics import ServerMetrics
from starchart.services.usage import charge
from starchart.settings import Settings


def default_params(settings: Settings) -> SamplingParams:
    return SamplingParams(
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        min_p=settings.min_p,
        max_tokens=settings.max_tokens,
        repetition_penalty=settings.repetition_penalty,
        presence_penalty=settings.presence_penalty,
        frequency_penalty=settings.frequency_penalty,
    )


@dataclass
class Stats:
    in_flight: int = 0
    requests: int = 0
    completion_tokens: int = 0
    last_tokens_per_second: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests_in_flight": self.in_flight,
            "requests_total": self.requests,
            "completion_tokens_total": self.completion_tokens,
            "last_tokens_per_second": self.last_tokens_per_second,
        }


@dataclass
class Reply:
    """A whole (non-streamed) answer."""

    text: str
    finish: Finish
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class ChatService:
    settings: Settings
    engines: dict[str, Engine] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)
    metrics: ServerMetrics | None = None  # the server's; None in the terminal chat
    policy: PoolPolicy = field(default_factory=PoolPolicy)
    # When each engine is loaded (engines/pool.py); built from ``engines`` and ``policy``.
    pool: ModelPool = field(init=False)

    def __post_init__(self) -> None:
        self.pool = ModelPool(self.engines, self.policy, on_loaded=(
            self.metrics.model_loaded if self.metrics is not None else None))

    @property
    def default_model(self) -> str | None:
        return next(iter(self.engines), None)

    @property
    def defaults(self) -> SamplingParams:
        return default_params(self.settings)

    def served(self, model: str | None) -> Engine:
        """The engine of ``model`` (None: the default one), loaded or not."""
        name = model or self.default_model
        engine = self.engines.get(name) if name else None
        if engine is None:
            served = ", ".join(self.engines) or "none"
            raise NotFound(f"model {model!r} is not served here (served: {served})",
                           param="model", code="model_not_found")
        return engine

    def engine(self, model: str | None) -> Engine:
        """The engine of ``model``, loaded now (503 saying why when it is not)."""
        return self.pool.require(self.served(model).info.id)

    async def ready(self, model: str | None) -> Engine:
        """The engine of ``model``, loaded: loads it first when it is served on demand
        (and waits for a load under way). Every route that generates calls this before
        it tokenizes anything; the model stays loaded until the caller's next await
        (a stream from ``stream_chat``/``stream_completion`` holds it from creation)."""
        return await self.pool.ready(self.served(model).info.id)

    def with_system_prompt(self, messages: Sequence[Message]) -> list[Message]:
        """Add the configured system prompt when the conversation has none."""
        out = list(messages)
        if not any(m.get("role") == "system" for m in out):
            out.insert(0, {"role": "system", "content": self.settings.system_prompt})
        return out

    def stream_chat(self, model: str | None, messages: Sequence[Message],
                    params: SamplingParams, tools: Sequence[dict[str, Any]] | None = None,
                    *, continue_final: bool = False) -> AsyncIterator[StreamEvent]:
        """Validation (model, prompt length) happens here, before the first await.

        ``tools`` go to a chat template that takes them (``StructuredRequest.template_tools``).
        ``continue_final``: go on with the final (assistant) message instead of
        answering it (``Engine.stream_continuation``).
        """
        engine = self.engine(model)
        messages = self.with_system_prompt(messages)
        if continue_final:
            return self._tracked(engine, engine.stream_continuation(messages, params, tools))
        return self._tracked(engine, engine.stream_chat(messages, params, tools))

    def stream_completion(self, model: str | None, prompt: str,
                          params: SamplingParams) -> AsyncIterator[StreamEvent]:
        engine = self.engine(model)
        return self._tracked(engine, engine.stream_completion(prompt, params))

    def _tracked(self, engine: Engine, events: AsyncIterator[StreamEvent]
                 ) -> AsyncIterator[StreamEvent]:
        counted = self._counted(events)
        tracked = (counted if self.metrics is None
                   else self.metrics.track(engine.info.id, counted))
        return self.pool.held(engine.info.id, tracked)

    async def _counted(self, events: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
        self.stats.in_flight += 1
        self.stats.requests += 1
        first: float | None = None  # decode speed counts from the first token, not the queue
        streamed = 0  # tokens the text so far covers
        finished = False
        try:
            async for event in events:
                if first is None:
                    first = time.perf_counter()
                if isinstance(event, TextDelta):
                    streamed += event.tokens
                elif isinstance(event, Finish):
                    finished = True
                    elapsed = time.perf_counter() - first
                    tokens = event.usage.completion_tokens
                    self.stats.completion_tokens += tokens
                    charge(event.usage.prompt_tokens + tokens)
                    if elapsed > 0 and tokens > 1:
                        self.stats.last_tokens_per_second = (tokens - 1) / elapsed
                yield event
        finally:
            self.stats.in_flight -= 1
            if not finished:  # cancelled or failed: what was generated still counts
                self.stats.completion_tokens += streamed
                charge(streamed)
            await events.aclose()  # type: ignore[attr-defined]


async def collect(events: AsyncIterator[StreamEvent]) -> Reply:
    """Drain a stream into one ``Reply``."""
    parts: list[str] = []
    logprobs: list[TokenLogprob] = []
    finish: Finish | None = None
    async for event in events:
        if isinstance(event, TextDelta):
            parts.append(event.text)
            logprobs.extend(event.logprobs)
        else:
            finish = event
    assert finish is not None, "an engine stream always ends with Finish"
    return Reply("".join(parts), finish, logprobs)
