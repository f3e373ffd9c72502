"""The real embedded SmolLM2-135M, loaded from its GGUF through transformers
(``gguf_file=``, de-quantized to fp32), alone and behind the HTTP API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
from streams import drain, run

from starchart.engines.base import SamplingParams
from starchart.engines.transformers import TransformersEngine
from starchart.registry import EMBEDDED_NAME

FRANCE = [
    {"role": "system", "content": ""},
    {"role": "user", "content": "What is the capital of France?"},
]
GREEDY = SamplingParams(temperature=0, max_tokens=24)


@pytest.fixture(scope="module")
def engine() -> Iterator[TransformersEngine]:
    """Overrides the llama.cpp ``engine``: ``live_server`` and ``api`` serve this one."""
    eng = TransformersEngine(EMBEDDED_NAME, n_ctx=2048)
    eng.load()
    yield eng
    eng.close()


def test_capital_of_france_at_temperature_0(engine: TransformersEngine) -> None:
    deltas, finish = run(drain(engine.stream_chat(FRANCE, GREEDY)))
    assert "Paris" in "".join(deltas)
    assert finish.usage.prompt_tokens > 0


def test_greedy_is_greedy_inside_a_batch_of_hot_samplers(engine: TransformersEngine) -> None:
    alone, _ = run(drain(engine.stream_chat(FRANCE, GREEDY)))

    async def crowded() -> list[tuple[list[str], object]]:
        hot = GREEDY.replace(temperature=1.5, top_k=0, top_p=1.0)
        return await asyncio.gather(drain(engine.stream_chat(FRANCE, GREEDY)),
                                    *[drain(engine.stream_chat(FRANCE, hot)) for _ in range(3)])

    results = run(crowded())
    assert "".join(results[0][0]) == "".join(alone)


def test_a_seed_reproduces_a_sampled_answer(engine: TransformersEngine) -> None:
    seeded = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, max_tokens=12, seed=1234,
                            repetition_penalty=1.0)
    first, _ = run(drain(engine.stream_chat(FRANCE, seeded)))
    again, _ = run(drain(engine.stream_chat(FRANCE, seeded)))
    assert "".join(first) == "".join(again)


def test_models_endpoint_reports_the_engine(api: httpx.Client) -> None:
    (model,) = api.get("/v1/models").json()["data"]
    assert model["id"] == EMBEDDED_NAME
    assert model["kind"] == "chat" and model["loaded"] is True
    assert model["engine"] == "transformers"
    assert model["dtype"] == "float32"
    assert model["quantization"] is None
    assert model["n_ctx"] == 2048
    assert model["format"] == "gguf"
    # 135M parameters de-quantized to fp32.
    assert 400e6 < model["weight_bytes"] < 700e6


def test_capital_of_france_over_http(api: httpx.Client) -> None:
    body = {"messages": FRANCE, "temperature": 0, "max_tokens": 24}
    reply = api.post("/v1/chat/completions", json=body).json()
    assert "Paris" in reply["choices"][0]["message"]["content"]
    text = ""
    with api.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[len("data: "):]).get("choices", []):
                    text += choice["delta"].get("content") or ""
    assert text == reply["choices"][0]["message"]["content"]


def test_a_json_schema_constrains_one_sequence_of_a_batch(engine: TransformersEngine) -> None:
    import jsonschema

    from starchart.structured.grammar import schema_grammar

    schema = {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]},
                                               "people": {"type": "integer", "minimum": 1}},
              "required": ["city", "people"], "additionalProperties": False}
    constrained = SamplingParams(temperature=0.8, seed=5, max_tokens=30,
                                 grammar=schema_grammar(schema, param="response_format"))

    async def both() -> list[tuple[list[str], object]]:
        return await asyncio.gather(drain(engine.stream_chat(FRANCE, constrained)),
                                    drain(engine.stream_chat(FRANCE, GREEDY)))

    (json_deltas, finish), (free, _) = run(both())
    assert finish.reason == "stop"
    jsonschema.validate(json.loads("".join(json_deltas)), schema)
    assert "Paris" in "".join(free)  # the unconstrained neighbour is untouched
