"""The embedded model on the llama.cpp engine, through the service."""

import asyncio

import pytest

from starchart.engines.base import Finish, SamplingParams, TextDelta
from starchart.errors import ContextOverflow
from starchart.services.chat import ChatService, collect

from tests.conftest import FRANCE

GREEDY = SamplingParams(temperature=0, max_tokens=64)


def deltas(service: ChatService, messages, params: SamplingParams) -> tuple[list[str], Finish]:
    async def go():
        texts, finish = [], None
        async for event in service.stream_chat(None, messages, params):
            if isinstance(event, TextDelta):
                texts.append(event.text)
            else:
                finish = event
        return texts, finish
    return asyncio.run(go())


def test_capital_of_france(service: ChatService) -> None:
    reply = asyncio.run(collect(service.stream_chat(None, FRANCE, GREEDY)))
    assert "Paris" in reply.text
    assert reply.finish.reason == "stop"
    assert reply.finish.usage.prompt_tokens > 10
    assert 0 < reply.finish.usage.completion_tokens < 64


def test_template_tokens_never_reach_the_text(service: ChatService) -> None:
    texts, finish = deltas(service, FRANCE, GREEDY)
    assert not any("<|im" in t for t in texts)
    assert finish.reason == "stop"


def test_stop_string_spanning_tokens(service: ChatService) -> None:
    question = [{"role": "system", "content": ""},
                {"role": "user", "content": "Write one sentence about the sea."}]
    params = GREEDY.replace(max_tokens=40)
    texts, _ = deltas(service, question, params)
    full = "".join(texts)
    # A stop string made of the end of one token and the start of the next.
    i = next(i for i in range(3, len(texts) - 1)
             if len(texts[i]) >= 2 and len(texts[i + 1]) >= 2)
    stop = texts[i][-2:] + texts[i + 1][:2]
    expected = full[: full.index(stop)]
    cut, finish = deltas(service, question, params.replace(stop=(stop,)))
    assert "".join(cut) == expected
    assert finish.reason == "stop"


def test_ignore_eos_generates_exactly_max_tokens(service: ChatService) -> None:
    _, finish = deltas(service, FRANCE, GREEDY.replace(max_tokens=50, ignore_eos=True))
    assert finish.reason == "length"
    assert finish.usage.completion_tokens == 50


def test_prompt_longer_than_context_is_refused(service: ChatService) -> None:
    long = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(ContextOverflow) as info:
        service.stream_chat(None, long, GREEDY)
    assert info.value.n_ctx == 2048 and info.value.prompt_tokens > 2048
    assert "2048" in info.value.message


def test_seed_makes_sampling_repeatable(service: ChatService) -> None:
    params = SamplingParams(temperature=1.0, max_tokens=20, seed=1234)
    one = asyncio.run(collect(service.stream_chat(None, FRANCE, params))).text
    two = asyncio.run(collect(service.stream_chat(None, FRANCE, params))).text
    assert one == two


def test_closing_the_stream_stops_generation(service: ChatService) -> None:
    engine = next(iter(service.engines.values()))
    params = GREEDY.replace(max_tokens=1500, ignore_eos=True)

    async def go() -> int:
        before = engine.tokens_generated
        stream = service.stream_chat(None, FRANCE, params)
        for _ in range(3):
            await stream.__anext__()
        await stream.aclose()
        while engine.queued:
            await asyncio.sleep(0.01)
        return engine.tokens_generated - before

    produced = asyncio.run(go())
    assert produced < 20
