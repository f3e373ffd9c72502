"""A bounded, seeded hypothesis fuzz of request parsing, the SSE writer and chat-template
rendering: any input gives a parsed request or a 400-style error, a frame that reads back
as what was sent, or a rendered prompt / a StarchartError; never another exception."""

from __future__ import annotations

import json
from typing import Any

import pydantic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from starchart.api.protocol import ChatCompletionChunk, ChatCompletionRequest, ChunkChoice, Delta
from starchart.api.streaming import DONE, error_frame
from starchart.api.streaming import _frame as sse_frame
from starchart.chat.templates import ChatTemplate
from starchart.engines.llamacpp import CHATML, LlamaCppEngine
from starchart.errors import BadRequest, StarchartError

FUZZ = settings(max_examples=150, derandomize=True, deadline=None,
                suppress_health_check=list(HealthCheck))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                               max_size=4),
    max_leaves=12)
FIELDS = ["messages", "model", "max_tokens", "temperature", "stop", "stream", "tools",
          "response_format", "logprobs", "top_logprobs", "n", "seed", "top_p"]
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant",
                                                          "tool", "x"]),
                                 "content": st.text() | JSON})
REQUEST = st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6) | st.fixed_dictionaries(
    {"messages": st.lists(MESSAGE, min_size=0, max_size=4)},
    optional={"max_tokens": JSON, "stop": JSON, "temperature": JSON})


@FUZZ
@given(REQUEST)
def test_request_parsing_accepts_or_refuses_never_crashes(body: dict[str, Any]) -> None:
    try:
        ChatCompletionRequest.model_validate(body)
    except pydantic.ValidationError:
        pass  # the API answers 400 naming the field


@FUZZ
@given(st.text(), st.text())
def test_sse_frames_read_back_as_sent(content: str, message: str) -> None:
    chunk = ChatCompletionChunk(id="c", created=0, model="m",
                                choices=[ChunkChoice(delta=Delta(content=content))])
    frame = sse_frame(chunk)
    assert frame.startswith("data: ") and frame.endswith("\n\n")
    assert "\n" not in frame[:-2] and "\r" not in frame[:-2], "one SSE line per frame"
    assert json.loads(frame[6:])["choices"][0]["delta"]["content"] == content
    error = error_frame(BadRequest(message, param="messages"))
    assert json.loads(error[6:])["error"]["message"] == message
    assert DONE == "data: [DONE]\n\n"


@FUZZ
@given(st.lists(MESSAGE, max_size=5))
def test_template_rendering_renders_or_refuses(engine: LlamaCppEngine,
                                               messages: list[dict[str, Any]]) -> None:
    """ChatML and the embedded model's own template (from its GGUF)."""
    assert engine.chat_template is not None
    for template in (ChatTemplate(source=CHATML), engine.chat_template):
        try:
            template.render(messages)
        except StarchartError:
            pass
