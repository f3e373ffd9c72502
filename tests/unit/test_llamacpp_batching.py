"""Continuous batching on the embedded model: many sequences, one context."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from starchart.api.app import create_app
from starchart.engines.base import Finish, SamplingParams, StreamEvent, TextDelta
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.registry import EMBEDDED_NAME, embedded_gguf
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port

GREEDY = SamplingParams(temperature=0, max_tokens=32)
QUESTIONS = [
    "What is the capital of France?", "What is the capital of Italy?",
    "What is the capital of Spain?", "Name the capital of Germany.",
    "What is two plus two?", "Name a color.", "Name a fruit.", "What is the largest ocean?",
]


def chat(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": ""}, {"role": "user", "content": question}]


class Run:
    """One stream's text, finish and the time of every delta."""

    def __init__(self) -> None:
        self.text = ""
        self.finish: Finish | None = None
        self.times: list[float] = []

    async def consume(self, events: AsyncIterator[StreamEvent], *, stop_after: int = 0) -> None:
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    self.text += event.text
                    self.times.append(time.monotonic())
                    if stop_after and len(self.times) >= stop_after:
                        return
                else:
                    self.finish = event
        finally:
            await events.aclose()  # type: ignore[attr-defined]


def alone(engine: LlamaCppEngine, messages, params: SamplingParams) -> Run:
    run = Run()
    asyncio.run(run.consume(engine.stream_chat(messages, params)))
    return run


def together(engine: LlamaCppEngine, jobs) -> list[Run]:
    async def go() -> list[Run]:
        runs = [Run() for _ in jobs]
        await asyncio.gather(*(run.consume(engine.stream_chat(m, p))
                               for run, (m, p) in zip(runs, jobs, strict=True)))
        return runs
    return asyncio.run(go())


def overlapping(runs: list[Run]) -> bool:
    windows = sorted((r.times[0], r.times[-1]) for r in runs if r.times)
    return any(start < end for (_, end), (start, _) in itertools.pairwise(windows))


def test_eight_concurrent_greedy_streams_match_their_text_alone(engine: LlamaCppEngine) -> None:
    expected = [alone(engine, chat(q), GREEDY).text for q in QUESTIONS]
    runs = together(engine, [(chat(q), GREEDY) for q in QUESTIONS])
    assert [r.text for r in runs] == expected
    assert all(r.finish is not None for r in runs)
    assert overlapping(runs)  # decoded together, not one after another


def test_cancelled_sequence_frees_its_cells_and_the_others_complete(
        engine: LlamaCppEngine) -> None:
    params = GREEDY.replace(max_tokens=60, ignore_eos=True)
    before = engine.tokens_generated

    async def go() -> list[Run]:
        runs = [Run() for _ in QUESTIONS]
        tasks = [run.consume(engine.stream_chat(chat(q), params), stop_after=3 if i == 0 else 0)
                 for i, (run, q) in enumerate(zip(runs, QUESTIONS, strict=True))]
        await asyncio.gather(*tasks)
        while engine.queued:
            await asyncio.sleep(0.01)
        return runs

    runs = asyncio.run(go())
    assert runs[0].finish is None
    for run in runs[1:]:
        assert run.finish is not None and run.finish.usage.completion_tokens == 60
    resident = engine.resident_tokens()
    # Seven finished sequences keep prompt + answer resident (for prefix reuse);
    # the cancelled one holds no cell at all.
    assert sorted(resident)[0] == 0 and all(n > 60 for n in sorted(resident)[1:]), resident
    assert engine.tokens_generated - before < 7 * 60 + 20


def test_mixed_parameters_in_one_batch_are_each_honoured(engine: LlamaCppEngine) -> None:
    story = chat("Write a short story about a cat.")
    jobs = [
        (story, GREEDY.replace(max_tokens=5)),
        (story, GREEDY.replace(max_tokens=40, stop=(" the",))),
        (story, SamplingParams(temperature=1.0, top_k=40, top_p=0.9, seed=7, max_tokens=24)),
        (story, SamplingParams(temperature=0.8, min_p=0.1, seed=11, max_tokens=24)),
        (story, GREEDY.replace(max_tokens=40, repetition_penalty=1.0)),
        (story, GREEDY.replace(max_tokens=40, repetition_penalty=1.0, presence_penalty=2.0,
                               frequency_penalty=1.0)),
    ]
    expected = [alone(engine, m, p) for m, p in jobs]
    runs = together(engine, jobs)
    for run, want in zip(runs, expected, strict=True):
        assert run.text == want.text
        assert run.finish == want.finish
    short, stopped, seeded, min_p, plain, penalised = runs
    assert short.finish is not None and short.finish.usage.completion_tokens == 5
    assert short.finish.reason == "length"
    assert stopped.finish is not None and stopped.finish.reason == "stop"
    assert " the" not in stopped.text and plain.text.startswith(stopped.text)
    assert seeded.text != min_p.text
    assert penalised.text != plain.text


def test_long_prompt_does_not_stall_running_streams(engine: LlamaCppEngine) -> None:
    long_a = chat("Summarise this. " + "The quick brown fox jumps over the lazy dog. " * 70)
    long_b = chat("Read this. " + "A slow green turtle walks under the busy bridge. " * 70)
    assert len(engine.tokenize(engine.render_chat(long_a))) > 700
    first = Run()
    start = time.monotonic()
    asyncio.run(first.consume(engine.stream_chat(long_a, GREEDY.replace(max_tokens=1))))
    whole_prompt = first.times[0] - start  # the prompt read in one go, nothing beside it

    params = GREEDY.replace(max_tokens=400, ignore_eos=True)

    async def go() -> tuple[list[Run], Run]:
        runs = [Run() for _ in range(4)]
        tasks = [asyncio.create_task(run.consume(engine.stream_chat(chat(q), params)))
                 for run, q in zip(runs, QUESTIONS, strict=False)]
        while min(len(r.times) for r in runs) < 5:
            await asyncio.sleep(0.005)
        late = Run()
        await late.consume(engine.stream_chat(long_b, GREEDY.replace(max_tokens=2)))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return runs, late

    runs, late = asyncio.run(go())
    arrived = late.times[0] - whole_prompt  # roughly when the long prompt came in
    gaps = [b - a for r in runs for a, b in zip(r.times, r.times[1:], strict=False)
            if b >= arrived]
    assert gaps
    # Chunked: the prompt was read over many steps while the others kept
    # generating; reading it whole would stall them for `whole_prompt`.
    assert max(gaps) < whole_prompt / 2, (max(gaps), whole_prompt)


def test_next_turn_reuses_the_previous_turns_cells(engine: LlamaCppEngine) -> None:
    messages = chat("Name the capital of Germany.")
    first = alone(engine, messages, GREEDY)
    turn1 = len(engine.tokenize(engine.render_chat(messages)))
    following = [*messages, {"role": "assistant", "content": first.text},
                 {"role": "user", "content": "And of France?"}]
    before = engine.reused_tokens
    alone(engine, following, GREEDY)
    assert engine.reused_tokens - before >= turn1


@pytest.fixture
def one_slot_server(tmp_path) -> Iterator[tuple[LiveServer, LlamaCppEngine]]:
    eng = LlamaCppEngine(EMBEDDED_NAME, embedded_gguf(), n_ctx=512, parallel=1, max_queue=1)
    eng.load()
    settings = Settings(home=tmp_path / "home", n_ctx=512)
    try:
        with LiveServer(create_app(settings, engines=[eng]), free_port()) as server:
            yield server, eng
    finally:
        eng.close()


def test_full_queue_answers_429_with_retry_after_and_keeps_serving(one_slot_server) -> None:
    server, eng = one_slot_server
    long_body = {"messages": chat("Tell me a story."), "max_tokens": 400, "ignore_eos": True,
                 "stream": True}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions", json=long_body) as running:
            lines = running.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            with client.stream("POST", "/v1/chat/completions", json=long_body) as waiting:
                deadline = time.monotonic() + 10
                while eng.batch_stats()["queued"] < 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                refused = client.post("/v1/chat/completions",
                                      json={"messages": chat("Hi"), "max_tokens": 4})
                assert refused.status_code == 429
                assert int(refused.headers["retry-after"]) >= 1
                error = refused.json()["error"]
                assert error["code"] == "rate_limit_exceeded" and "max-queue" in error["message"]
                stats = client.get("/v1/stats").json()["models"][EMBEDDED_NAME]
                assert stats["running"] == 1 and stats["queued"] == 1
                assert waiting.status_code == 200
        # Both streams closed: the server answers again.
        deadline = time.monotonic() + 10
        while eng.queued and time.monotonic() < deadline:
            time.sleep(0.01)
        ok = client.post("/v1/chat/completions",
                         json={"messages": chat("Name the capital of Germany."),
                               "max_tokens": 16, "temperature": 0})
        assert ok.status_code == 200
        assert "Berlin" in ok.json()["choices"][0]["message"]["content"]
