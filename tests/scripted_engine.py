"""A chat engine that says what the test tells it to, for protocol edge cases.

Registered through the real app (``create_app(settings, engines=[...])``), so
everything around it (service, store, SSE, WebSocket, metrics) is the real code;
the features themselves are tested with the real embedded model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Literal

from starchart.chat.templates import ChatTemplate
from starchart.engines.base import (
    Engine,
    Finish,
    ModelInfo,
    SamplingParams,
    StreamEvent,
    TextDelta,
    Usage,
)
from starchart.errors import StarchartError

TEMPLATE = ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")
WEIGHT_BYTES = 1234  # what /metrics reports for every scripted model


class ScriptedEngine(Engine):
    """Yields ``deltas`` (at most ``max_tokens`` of them), then raises ``error``
    mid-stream, or finishes ("length" when ``max_tokens`` cut it, else "stop").
    With ``refusal``, the request fails before streaming starts (a 500 for an
    internal error)."""

    def __init__(self, deltas: Sequence[str], error: Exception | None = None,
                 model_id: str = "scripted", *, refusal: StarchartError | None = None,
                 delay: float = 0.01) -> None:
        super().__init__()
        self.deltas = list(deltas)
        self.error = error
        self.refusal = refusal
        self.delay = delay
        self.info = ModelInfo(id=model_id, engine="scripted", path="(scripted)", n_ctx=4096,
                              format="scripted", weight_bytes=WEIGHT_BYTES)
        self.chat_template = ChatTemplate(TEMPLATE)
        self._loaded = False

    def load(self) -> None:
        self._loaded = True

    def close(self) -> None:
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def tokenize(self, prompt: str) -> list[int]:
        return list(prompt.encode("utf-8"))  # a token per byte is all the service needs

    def stream_tokens(self, prompt_tokens: list[int],
                      params: SamplingParams) -> AsyncIterator[StreamEvent]:
        if self.refusal is not None:
            raise self.refusal  # before the first event: no stream is started
        return self._stream(len(prompt_tokens), params)

    async def _stream(self, prompt: int, params: SamplingParams) -> AsyncIterator[StreamEvent]:
        deltas = self.deltas[:params.max_tokens]
        for text in deltas:
            await asyncio.sleep(self.delay)
            self.tokens_generated += 1
            yield TextDelta(text)
        if self.error is not None:
            raise self.error
        cut = len(deltas) < len(self.deltas)
        yield Finish("length" if cut else "stop", Usage(prompt, len(deltas)))


Behaviour = Literal["answer", "refuse", "cut"]


def scripted(behaviour: Behaviour, words: int = 6) -> ScriptedEngine:
    """A model named ``scripted-<behaviour>``: ``answer`` says ``words`` words;
    ``refuse`` fails every request before streaming (a 500); ``cut`` says two
    words, then fails with an internal error mid-stream."""
    said = [f" w{i}" for i in range(words)]
    model_id = f"scripted-{behaviour}"
    if behaviour == "refuse":
        return ScriptedEngine([], model_id=model_id,
                              refusal=StarchartError("scripted engine: refusing on purpose"))
    if behaviour == "cut":
        return ScriptedEngine(said[:2], RuntimeError("scripted engine: failing mid-stream"),
                              model_id, delay=0.001)
    return ScriptedEngine(said, model_id=model_id, delay=0.001)
