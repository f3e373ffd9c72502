"""response_format and tools through the official openai client, on the embedded model."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pydantic
import pytest

from tests.conftest import LiveServer

MODEL = "smollm2-135m-instruct"
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"enum": ["Paris", "Berlin", "Rome"]},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "maxItems": 2},
    },
    "required": ["name", "age", "city", "tags"],
    "additionalProperties": False,
    "$defs": {"tag": {"type": "string", "maxLength": 8}},
}
ASK = [{"role": "system", "content": ""},
       {"role": "user", "content": "Describe a person as JSON."}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The current time in a timezone",
    "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
                   "required": ["zone"]}}}
WEATHER_Q = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
def client(live_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0)


def person_format(schema: dict = PERSON) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": schema,
                                                   "strict": True}}


def test_json_schema_answer_validates(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=80,
                                         response_format=person_format())
    assert out.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(out.choices[0].message.content), PERSON)


def test_json_schema_streamed_validates(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=80, response_format=person_format(), stream=True,
        temperature=0.8, seed=3))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(text), PERSON)


def test_json_object_parses(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=60,
                                         response_format={"type": "json_object"})
    if out.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(out.choices[0].message.content), dict)
    else:  # max_tokens mid-object: the text is a prefix of JSON, as OpenAI documents
        assert out.choices[0].message.content.startswith("{")


def test_max_tokens_mid_object_is_length(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4,
                                         response_format=person_format())
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 4


class City(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=16)
    country: str = pydantic.Field(max_length=16)


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    out = client.chat.completions.parse(
        model=MODEL, max_tokens=40, response_format=City,
        messages=[{"role": "user", "content": "Name the capital of Germany."}])
    city = out.choices[0].message.parsed
    assert isinstance(city, City)


def test_fifty_seeds_at_temperature_0_8_all_validate(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 1, "maximum": 9}},
        "required": ["color", "count"], "additionalProperties": False}
    for seed in range(50):
        out = client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=20, temperature=0.8, seed=seed,
            response_format=person_format(schema))
        assert out.choices[0].finish_reason == "stop", seed
        jsonschema.validate(json.loads(out.choices[0].message.content), schema)


def test_each_sequence_of_a_batch_keeps_its_own_grammar(client: openai.OpenAI) -> None:
    """Two schemas and two free answers decoded in one llama.cpp batch."""
    from concurrent.futures import ThreadPoolExecutor

    color = {"type": "object", "properties": {"color": {"enum": ["red", "blue"]}},
             "required": ["color"], "additionalProperties": False}
    jobs = [PERSON, color, None, None]

    def run(schema: dict | None) -> object:
        extra = {"response_format": person_format(schema)} if schema else {}
        return client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=80,
                                              temperature=0.7, seed=1, **extra)

    with ThreadPoolExecutor(len(jobs)) as pool:
        outs = list(pool.map(run, jobs))
    for schema, out in zip(jobs, outs, strict=True):
        if schema is not None:
            assert out.choices[0].finish_reason == "stop"
            jsonschema.validate(json.loads(out.choices[0].message.content), schema)
        else:
            assert out.choices[0].finish_reason in ("stop", "length")


def _check_call(call, tools: list[dict]) -> None:  # noqa: ANN001 - an openai tool call
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    assert call.id and call.type == "function"
    jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


@pytest.mark.parametrize("choice", ["required",
                                    {"type": "function", "function": {"name": "get_time"}}])
def test_forced_tool_call_is_well_formed(client: openai.OpenAI, choice: object) -> None:
    tools = [WEATHER, TIME]
    out = client.chat.completions.create(model=MODEL, messages=WEATHER_Q, max_tokens=60,
                                         tools=tools, tool_choice=choice,
                                         parallel_tool_calls=False)
    assert out.choices[0].finish_reason == "tool_calls"
    calls = out.choices[0].message.tool_calls
    assert len(calls) == 1
    _check_call(calls[0], tools)
    if isinstance(choice, dict):
        assert calls[0].function.name == "get_time"


def test_forced_tool_call_streamed_reassembles(client: openai.OpenAI) -> None:
    tools = [WEATHER, TIME]
    with client.chat.completions.stream(model=MODEL, messages=WEATHER_Q, max_tokens=60,
                                        tools=tools, tool_choice="required") as stream:
        pieces = [e for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    calls = final.choices[0].message.tool_calls
    assert calls
    for call in calls:
        _check_call(call, tools)
    assert len(pieces) > 1  # the arguments came in pieces


def test_tool_result_goes_back_and_the_model_answers(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model=MODEL, messages=WEATHER_Q, max_tokens=60,
                                           tools=[WEATHER], tool_choice="required", seed=1)
    call = first.choices[0].message.tool_calls[0]
    history = [{"role": "system", "content": ""}, *WEATHER_Q,
               {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
               {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21}'}]
    out = client.chat.completions.create(model=MODEL, messages=history, max_tokens=40,
                                         tools=[WEATHER], tool_choice="none", temperature=0)
    assert out.choices[0].finish_reason in ("stop", "length")
    # The tiny model answers in words (with the calls as raw JSON in its history it
    # repeated the call instead); whether it uses the 21 is beyond a 135M model.
    answer = out.choices[0].message.content
    assert answer and not answer.lstrip().startswith("{")
    assert not out.choices[0].message.tool_calls


def test_auto_may_answer_in_text(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=MODEL, max_tokens=30, tools=[WEATHER], temperature=0,
        messages=[{"role": "user", "content": "Name the capital of Germany."}])
    message = out.choices[0].message
    if message.tool_calls:  # the model chose to call: it must be well formed
        assert out.choices[0].finish_reason == "tool_calls"
        _check_call(message.tool_calls[0], [WEATHER])
    else:
        assert message.content


BAD = [
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "nope"}}}}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "array", "uniqueItems": True}}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "description": "x" * 70_000}}}},
     "response_format.json_schema.schema"),
    ({"tools": [WEATHER] * 129}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
     "tools[0].function.name"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "21"}]},
     "messages[1]"),
]


@pytest.mark.parametrize(("extra", "param"), BAD, ids=[p for _, p in BAD])
def test_bad_input_is_a_400_naming_the_parameter(api: httpx.Client, extra: dict,
                                                  param: str) -> None:
    body = {"model": MODEL, "messages": ASK, "max_tokens": 4, **extra}
    response = api.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    if "uniqueItems" in json.dumps(extra):
        assert "uniqueItems" in error["message"]
