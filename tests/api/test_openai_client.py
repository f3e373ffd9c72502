"""The official openai client, unchanged, against a live server."""

import openai
import pytest

from tests.conftest import FRANCE, LiveServer


@pytest.fixture
def client(live_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0)


def test_chat_non_streaming(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="smollm2-135m-instruct", messages=FRANCE,
                                         temperature=0)
    assert "Paris" in out.choices[0].message.content
    assert out.choices[0].finish_reason == "stop"
    assert out.usage.completion_tokens > 0


def test_chat_streaming_matches_non_streaming(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="smollm2-135m-instruct", messages=FRANCE,
                                           temperature=0, max_tokens=40)
    chunks = list(client.chat.completions.create(
        model="smollm2-135m-instruct", messages=FRANCE, temperature=0, max_tokens=40,
        stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert "Paris" in text
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == "stop" and all(f is None for f in finals[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_extra_sampling_parameters_pass_through(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=FRANCE, temperature=0, max_tokens=3,
        extra_body={"top_k": 1, "repetition_penalty": 1.0, "min_p": 0.1})
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 3


def test_completions(client: openai.OpenAI) -> None:
    out = client.completions.create(model="smollm2-135m-instruct",
                                    prompt="The capital of France is", temperature=0,
                                    max_tokens=5)
    assert "Paris" in out.choices[0].text
    streamed = client.completions.create(model="smollm2-135m-instruct",
                                         prompt="The capital of France is", temperature=0,
                                         max_tokens=5, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == out.choices[0].text


def test_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["smollm2-135m-instruct"]


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=FRANCE)
    assert info.value.body["code"] == "model_not_found"
