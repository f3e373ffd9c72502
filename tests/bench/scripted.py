"""A scripted engine behind the real app, for what the embedded model never does:
refuse every request (a 500) or fail half-way through a stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
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

Behaviour = Literal["answer", "refuse", "cut"]


class ScriptedEngine(Engine):
    """``answer``: a few words then Finish; ``refuse``: a 500 before streaming;
    ``cut``: two words, then an internal error mid-stream."""

    def __init__(self, behaviour: Behaviour, words: int = 6) -> None:
        super().__init__()
        self.behaviour = behaviour
        self.words = words
        self.info = ModelInfo(id=f"scripted-{behaviour}", engine="scripted", path="-",
                              n_ctx=4096, weight_bytes=1234)
        self.chat_template = ChatTemplate(
            "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
        self._loaded = False

    def load(self) -> None:
        self._loaded = True

    def close(self) -> None:
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def tokenize(self, prompt: str) -> list[int]:
        return list(range(len(prompt.split())))

    def stream_tokens(self, prompt_tokens: list[int],
                      params: SamplingParams) -> AsyncIterator[StreamEvent]:
        if self.behaviour == "refuse":
            raise StarchartError("scripted engine: refusing on purpose")
        return self._stream(len(prompt_tokens), params)

    async def _stream(self, prompt: int, params: SamplingParams) -> AsyncIterator[StreamEvent]:
        n = min(self.words, params.max_tokens)
        for i in range(n):
            if self.behaviour == "cut" and i == 2:
                raise RuntimeError("scripted engine: failing mid-stream on purpose")
            await asyncio.sleep(0.001)
            self.tokens_generated += 1
            yield TextDelta(f" w{i}")
        yield Finish("length" if n == params.max_tokens else "stop", Usage(prompt, n))
