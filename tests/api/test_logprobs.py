"""logprobs / top_logprobs through the official openai client, on the real model."""

from __future__ import annotations

import math

import openai
import pytest

from tests.conftest import LiveServer

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# Greedy on the raw distribution: no penalty moves the pick off the most likely token.
GREEDY = {"temperature": 0, "max_tokens": 8}
RAW = {"repetition_penalty": 1.0}


@pytest.fixture
def client(live_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0)


def check_entries(entries: list, text: str, top: int) -> None:
    assert b"".join(bytes(e.bytes) for e in entries).decode() == text
    for e in entries:
        assert e.logprob <= 0 and math.isfinite(e.logprob)
        assert len(e.top_logprobs) == top
        tops = [t.logprob for t in e.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        if top:  # greedy: the chosen token is the most likely one
            assert e.top_logprobs[0].token == e.token
            assert e.top_logprobs[0].logprob == pytest.approx(e.logprob)
        assert bytes(e.bytes).decode("utf-8", errors="replace") == e.token


def test_chat_logprobs(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="smollm2-135m-instruct", messages=QUESTION,
                                         logprobs=True, top_logprobs=3, extra_body=RAW,
                                         **GREEDY)
    choice = out.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    assert len(choice.logprobs.content) == out.usage.completion_tokens
    check_entries(choice.logprobs.content, choice.message.content or "", 3)


def test_chat_logprobs_streamed_match_the_whole_answer(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="smollm2-135m-instruct", messages=QUESTION,
                                           logprobs=True, top_logprobs=2, extra_body=RAW,
                                           **GREEDY)
    entries = []
    text = ""
    for chunk in client.chat.completions.create(
            model="smollm2-135m-instruct", messages=QUESTION, logprobs=True, top_logprobs=2,
            stream=True, extra_body=RAW, **GREEDY):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            assert chunk.choices[0].logprobs is not None
            entries += chunk.choices[0].logprobs.content
    assert text == whole.choices[0].message.content
    check_entries(entries, text, 2)
    assert [e.token for e in entries] == [e.token for e in whole.choices[0].logprobs.content]
    assert [e.logprob for e in entries] == pytest.approx(
        [e.logprob for e in whole.choices[0].logprobs.content], abs=1e-3)


def test_logprobs_without_top_and_off_by_default(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="smollm2-135m-instruct", messages=QUESTION,
                                         logprobs=True, **GREEDY)
    check_entries(out.choices[0].logprobs.content, out.choices[0].message.content or "", 0)
    plain = client.chat.completions.create(model="smollm2-135m-instruct", messages=QUESTION,
                                           **GREEDY)
    assert plain.choices[0].logprobs is None


def test_logprobs_with_sampling_are_of_the_raw_distribution(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="smollm2-135m-instruct", messages=QUESTION,
                                         logprobs=True, top_logprobs=5, temperature=1.5,
                                         seed=3, max_tokens=6)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens
    for e in content:
        # Each top-5 set is a probability distribution's head: it sums to at most 1.
        assert sum(math.exp(t.logprob) for t in e.top_logprobs) <= 1 + 1e-4


def test_completions_logprobs_legacy_shape(client: openai.OpenAI) -> None:
    out = client.completions.create(model="smollm2-135m-instruct",
                                    prompt="The capital of France is", logprobs=2,
                                    extra_body=RAW, **GREEDY)
    choice = out.choices[0]
    lp = choice.logprobs
    assert lp is not None and len(lp.tokens) == out.usage.completion_tokens
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset[0] == 0
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) <= 2 and max(top.values()) == pytest.approx(logprob)
        assert token in top
