"""logprobs / top_logprobs from the transformers engine, through the openai client.

The tiny Llama's next token is a lookup table with the winning logit far above
the rest, so each answer token's log probability is ~0 and it is its own top
choice; its tokenizer has one token per byte, so "你" spans three entries whose
bytes only together make the character.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from tiny_model import ANSWER

from starchart.engines.transformers import TransformersEngine


@pytest.fixture(scope="module")
def engine(tiny: TransformersEngine) -> TransformersEngine:
    """Overrides the llama.cpp ``engine``: ``live_server`` serves the tiny Llama."""
    return tiny


@pytest.fixture
def client(live_server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("temperature", [0, 0.8])
def test_chat_logprobs_on_the_transformers_engine(client: openai.OpenAI,
                                                   temperature: float) -> None:
    out = client.chat.completions.create(
        model=client.models.list().data[0].id, temperature=temperature, seed=1,
        messages=[{"role": "user", "content": "hi"}], logprobs=True, top_logprobs=2)
    choice = out.choices[0]
    assert choice.message.content == ANSWER
    content = choice.logprobs.content
    assert len(content) == len(ANSWER.encode()) == out.usage.completion_tokens
    assert b"".join(bytes(e.bytes) for e in content) == ANSWER.encode()
    for e in content:
        assert -1e-3 < e.logprob <= 0
        assert e.top_logprobs[0].bytes == e.bytes
        assert e.top_logprobs[1].logprob < -50  # the runner-up is far behind


def test_streamed_logprobs_and_none_by_default(client: openai.OpenAI) -> None:
    model = client.models.list().data[0].id
    entries = []
    for chunk in client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], stream=True,
            logprobs=True, temperature=0):
        if chunk.choices and chunk.choices[0].logprobs:
            entries += chunk.choices[0].logprobs.content
    assert b"".join(bytes(e.bytes) for e in entries) == ANSWER.encode()
    plain = client.chat.completions.create(model=model, temperature=0,
                                           messages=[{"role": "user", "content": "hi"}])
    assert plain.choices[0].logprobs is None
