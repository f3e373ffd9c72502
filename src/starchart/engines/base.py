"""The Engine interface and the data it speaks.

An engine turns a prompt into a stream of ``TextDelta`` events closed by one
``Finish`` (reason + token usage). It knows nothing about HTTP. Chat goes
through the model's ``ChatTemplate`` (``stream_chat`` renders it, then calls
``stream_completion``), so every engine gets chat for free.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from starchart.chat.templates import (
    ChatTemplate,
    Message,
    cut_at_continue_mark,
    open_final_message,
)
from starchart.errors import ContextOverflow
from starchart.structured.decoding import StructuredDecoder
from starchart.structured.grammar import Grammar

# "tool_calls" is set above the engine, when a reply turns out to be tool calls.
FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int = 50
    min_p: float = 0.0
    max_tokens: int = 1024
    repetition_penalty: float = 1.2
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Generate exactly max_tokens, ignoring end-of-sequence (benchmarks, tests).
    ignore_eos: bool = False
    # Constrained decoding (response_format, forced tool calls): every token must fit.
    grammar: Grammar | None = None
    # Report each token's log probability and this many most likely alternatives
    # (None: no log probabilities). Not a sampling choice: left out of as_dict().
    logprobs: int | None = None

    def replace(self, **changes: Any) -> SamplingParams:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["stop"] = list(self.stop)
        out.pop("grammar")
        out.pop("logprobs")
        return out


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log probability (log-softmax of the model's logits,
    before any sampling setting), with the ``top`` most likely tokens at its position."""

    token: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()


@dataclass(frozen=True)
class TextDelta:
    text: str
    # Tokens this text covers (an engine may hold a token's text back, e.g. while it
    # could be the start of a stop string): counted as generated even if the client leaves.
    tokens: int = 1
    # With SamplingParams.logprobs: one entry per token covered, in order.
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Finish:
    reason: FinishReason
    usage: Usage


StreamEvent = TextDelta | Finish


class QueueWatch:
    """Where one request waits in an engine's queue, for whoever started it.

    The caller puts a watch in ``QUEUE_WATCH`` before it iterates the engine's
    stream (a context variable: it stays with that task and never reaches
    another request); an engine with a queue registers how to read the
    request's place. Engines without a queue leave it unset.
    """

    def __init__(self) -> None:
        self._position: Callable[[], int | None] | None = None
        self._waited: Callable[[], float | None] | None = None

    def track(self, position: Callable[[], int | None],
              waited: Callable[[], float | None]) -> None:
        self._position, self._waited = position, waited

    def position(self) -> int | None:
        """1 = the next to run; None = not waiting (running, or no queue)."""
        return self._position() if self._position is not None else None

    def waited(self) -> float | None:
        """Seconds the request spent in the queue, once it left it (else None)."""
        return self._waited() if self._waited is not None else None


QUEUE_WATCH: ContextVar[QueueWatch | None] = ContextVar("starchart_queue_watch", default=None)


@dataclass
class ModelInfo:
    """What ``/v1/models`` and the status page show about a loaded model."""

    id: str
    engine: str
    path: str
    n_ctx: int
    format: str = "gguf"
    dtype: str | None = None
    quantization: str | None = None
    weight_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(out.pop("extra"))
        return out


class Engine(ABC):
    """A long-lived model runner. ``load()`` before use, ``close()`` when done."""

    info: ModelInfo
    chat_template: ChatTemplate
    # Set by engines that can constrain decoding to a grammar (``SamplingParams.grammar``).
    structured: StructuredDecoder | None = None
    # Whether ``stream_continuation`` works (the engine renders the prompt itself).
    can_continue: bool = True

    def __init__(self) -> None:
        # Tokens generated over the engine's life: lets tests see that a
        # cancelled request really stopped generating.
        self.tokens_generated = 0

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def loaded(self) -> bool: ...

    @abstractmethod
    def tokenize(self, prompt: str) -> list[int]:
        """The token ids the engine will feed for ``prompt`` (BOS included if added)."""

    @abstractmethod
    def stream_tokens(
        self, prompt_tokens: list[int], params: SamplingParams
    ) -> AsyncIterator[StreamEvent]:
        """Generate from already-tokenized input; the prompt fits the context."""

    def batch_stats(self) -> dict[str, int]:
        """Sequences running and waiting, for ``/v1/stats`` (engines that batch fill it)."""
        return {}

    @property
    def takes_tools(self) -> bool:
        """Whether ``render_chat``/``stream_chat`` offer ``tools`` their own way."""
        return self.chat_template.takes_tools

    def render_chat(self, messages: Sequence[Message],
                    tools: Sequence[dict[str, Any]] | None = None) -> str:
        return self.chat_template.render(messages, tools=tools)

    def render_continuation(self, messages: Sequence[Message],
                            tools: Sequence[dict[str, Any]] | None = None) -> str:
        """The prompt that makes the model go on with the final (assistant) message."""
        return cut_at_continue_mark(self.render_chat(open_final_message(messages), tools))

    async def serve_background(self) -> None:
        """Work the engine does beside the server for as long as it runs (the
        remote engine probes its upstreams); cancelled at shutdown. Local engines
        have nothing to do."""
        return None

    def prepare(self, prompt: str, *, param: str = "prompt") -> list[int]:
        """Tokenize ``prompt`` and refuse it when it leaves no room to generate.

        A prompt is never silently truncated.
        """
        tokens = self.tokenize(prompt)
        if len(tokens) >= self.info.n_ctx:
            raise ContextOverflow(len(tokens), self.info.n_ctx, param=param)
        return tokens

    def stream_completion(
        self, prompt: str, params: SamplingParams
    ) -> AsyncIterator[StreamEvent]:
        return self.stream_tokens(self.prepare(prompt), params)

    def stream_chat(
        self, messages: Sequence[Message], params: SamplingParams,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """``tools``: OpenAI tool definitions for a template that takes them."""
        return self._stream_prompt(self.render_chat(messages, tools), params)

    def stream_continuation(
        self, messages: Sequence[Message], params: SamplingParams,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Go on with the final message (an assistant's answer) instead of starting
        a new turn: the new text is what comes after it."""
        return self._stream_prompt(self.render_continuation(messages, tools), params)

    def _stream_prompt(self, prompt: str, params: SamplingParams
                       ) -> AsyncIterator[StreamEvent]:
        tokens = self.prepare(prompt, param="messages")
        stops = tuple(dict.fromkeys(params.stop + self.chat_template.stop_strings))
        return self.stream_tokens(tokens, params.replace(stop=stops))
