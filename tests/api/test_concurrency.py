"""Many clients on one llama.cpp model; clients that walk away."""

import itertools
import json
import threading
import time

import httpx

from tests.conftest import LiveServer

QUESTIONS = [
    "What is the capital of France?", "What is the capital of Italy?",
    "What is the capital of Spain?", "What is the capital of Germany?",
    "What is two plus two?", "Name a color.", "Name a fruit.", "What is the largest ocean?",
]


def ask(url: str, question: str, *, stream: bool) -> dict:
    body = {"messages": [{"role": "system", "content": ""},
                         {"role": "user", "content": question}],
            "temperature": 0, "max_tokens": 48, "stream": stream}
    with httpx.Client(base_url=url, timeout=300) as client:
        if not stream:
            out = client.post("/v1/chat/completions", json=body).json()
            return {"text": out["choices"][0]["message"]["content"],
                    "finish": out["choices"][0]["finish_reason"]}
        texts, finish, times = [], None, []
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choice = json.loads(line[6:])["choices"][0]
                if choice["delta"].get("content"):
                    texts.append(choice["delta"]["content"])
                    times.append(time.monotonic())
                finish = choice["finish_reason"] or finish
        return {"text": "".join(texts), "finish": finish, "times": times}


def test_eight_concurrent_streams_complete_each_with_its_own_text(
        live_server: LiveServer) -> None:
    expected = {q: ask(live_server.url, q, stream=False) for q in QUESTIONS}
    results: dict[str, dict] = {}

    def worker(q: str) -> None:
        results[q] = ask(live_server.url, q, stream=True)

    threads = [threading.Thread(target=worker, args=(q,)) for q in QUESTIONS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert set(results) == set(QUESTIONS)
    for q in QUESTIONS:
        assert results[q]["finish"] in ("stop", "length")
        # Each answer is exactly what that question gets alone: nothing mixed in.
        assert results[q]["text"] == expected[q]["text"], q
    # Decoded together (continuous batching): token windows overlap.
    windows = sorted((r["times"][0], r["times"][-1]) for r in results.values() if r["times"])
    assert any(start < end for (_, end), (start, _) in itertools.pairwise(windows))


def test_disconnected_stream_stops_the_engine(live_server: LiveServer, engine) -> None:
    body = {"messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": 1500, "ignore_eos": True, "stream": True}
    before = engine.tokens_generated
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            seen = 0
            for line in response.iter_lines():
                if line.startswith("data: "):
                    seen += 1
                if seen >= 5:
                    break  # leaving the block closes the connection
    deadline = time.monotonic() + 30
    while engine.queued and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.queued == 0
    assert engine.tokens_generated - before < 200  # of the 1500 asked for


def test_disconnected_non_streaming_request_stops_the_engine(live_server: LiveServer,
                                                             engine) -> None:
    body = {"messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": 1500, "ignore_eos": True}
    before = engine.tokens_generated
    try:
        httpx.post(live_server.url + "/v1/chat/completions", json=body, timeout=0.5)
    except httpx.TimeoutException:
        pass
    deadline = time.monotonic() + 30
    while (engine.queued or engine.tokens_generated == before) and \
            time.monotonic() < deadline:
        time.sleep(0.02)
    while engine.queued and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.queued == 0
    assert engine.tokens_generated - before < 1500
