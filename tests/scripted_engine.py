"""A chat engine that says what the test tells it to, for protocol edge cases.

Registered through the real app (``create_app(settings, engines=[...])``), so
everything around it (service, store, SSE, WebSocket) is the real code; the
features themselves are tested with the real embedded model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

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


class ScriptedEngine(Engine):
    """Yields ``deltas``, then raises ``error`` mid-stream (or finishes with "stop")."""

    def __init__(self, deltas: Sequence[str], error: StarchartError | None = None,
                 model_id: str = "scripted") -> None:
        super().__init__()
        self.deltas = list(deltas)
        self.error = error
        self.info = ModelInfo(id=model_id, engine="scripted", path="(scripted)", n_ctx=4096,
                              format="scripted")
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

    async def stream_tokens(self, prompt_tokens: list[int],
                            params: SamplingParams) -> AsyncIterator[StreamEvent]:
        for text in self.deltas:
            await asyncio.sleep(0.01)
            self.tokens_generated += 1
            yield TextDelta(text)
        if self.error is not None:
            raise self.error
        yield Finish("stop", Usage(len(prompt_tokens), len(self.deltas)))
