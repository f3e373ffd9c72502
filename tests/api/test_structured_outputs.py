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


def _check_call(call, tools: list[dict]) -> None:  # an openai tool call
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


# A ChatML template that offers tools its own way (as Qwen's and Hermes' do): tools in
# the system turn, calls as <tool_call> blocks, results as <tool_response> turns.
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
    "# Tools\n<tools>\n{% for tool in tools %}{{ tool['function'] | tojson }}\n{% endfor %}"
    "</tools>\nCall one as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>"
    "<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% if not tools %}"
    "<|im_start|>system\n{{ message['content'] }}<|im_end|>\n{% endif %}"
    "{% elif message['role'] == 'tool' %}"
    "<|im_start|>user\n<tool_response>{{ message['content'] }}</tool_response><|im_end|>\n"
    "{% elif message.get('tool_calls') %}<|im_start|>assistant\n"
    "{% for call in message['tool_calls'] %}<tool_call>{\"name\": "
    "{{ call['function']['name'] | tojson }}, \"arguments\": "
    "{{ call['function']['arguments'] | tojson }}}</tool_call>{% endfor %}<|im_end|>\n"
    "{% else %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture
def tool_template(engine, monkeypatch: pytest.MonkeyPatch):
    """The shared engine with a template that takes tools (restored after the test)."""
    from dataclasses import replace

    template = replace(engine.chat_template, source=TOOL_TEMPLATE)
    assert template.takes_tools and not engine.chat_template.takes_tools
    monkeypatch.setattr(engine, "chat_template", template)
    return template


def test_a_template_that_takes_tools_renders_them_itself(client: openai.OpenAI, engine,
                                                         tool_template) -> None:
    system = {"role": "system", "content": "You are helpful."}
    out = client.chat.completions.create(model=MODEL, messages=[system, *WEATHER_Q],
                                         tools=[WEATHER, TIME], max_tokens=30, temperature=0)
    native = tool_template.render([system, *WEATHER_Q], tools=[WEATHER, TIME])
    assert "# Tools" in native and '"name": "get_time"' in native
    # The prompt is exactly the template's own rendering: no generic tool prompt added.
    assert out.usage.prompt_tokens == len(engine.tokenize(native))
    message = out.choices[0].message
    for call in message.tool_calls or []:
        _check_call(call, [WEATHER, TIME])

    # A call and its result in the history go to the template as they are (the
    # arguments as an object), not rewritten as plain turns.
    history = [system, *WEATHER_Q,
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 21}'}]
    out = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER],
                                         max_tokens=20, temperature=0)
    rendered = tool_template.render(
        [*history[:2], {**history[2], "content": "", "tool_calls": [
            {**history[2]["tool_calls"][0], "function": {
                "name": "get_weather", "arguments": {"city": "Paris"}}}]}, history[3]],
        tools=[WEATHER])
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}' in rendered
    assert "<tool_response>" in rendered
    assert out.usage.prompt_tokens == len(engine.tokenize(rendered))


def test_a_template_without_tools_gets_the_generic_prompt(client: openai.OpenAI,
                                                          engine) -> None:
    from starchart.structured.tools import Tool, generic_tool_prompt

    assert not engine.chat_template.takes_tools
    out = client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "S."}, *WEATHER_Q],
        tools=[WEATHER], max_tokens=5, temperature=0)
    prompt = generic_tool_prompt([Tool("get_weather", WEATHER["function"]["description"],
                                       WEATHER["function"]["parameters"])], "auto")
    rendered = engine.chat_template.render(
        [{"role": "system", "content": f"S.\n\n{prompt}"}, *WEATHER_Q])
    assert out.usage.prompt_tokens == len(engine.tokenize(rendered))


TWO_CALLS = ('[{"name": "get_weather", "arguments": {"city": "Paris"}},'
             ' {"name": "get_time", "arguments": {"zone": "UTC"}}]')


@pytest.mark.parametrize("parallel", [True, False])
def test_parallel_tool_calls(client: openai.OpenAI, engine, parallel: bool) -> None:
    """true: the forced grammar allows a JSON array of calls; false: exactly one call."""
    from starchart.structured.request import plan
    from starchart.structured.tools import Tool

    tools = [Tool(t["function"]["name"], t["function"]["description"],
                  t["function"]["parameters"]) for t in (WEATHER, TIME)]
    grammar = plan(response_format=None, schema=None, tools=tools, tool_choice="required",
                   parallel=parallel, ignore_eos=False).grammar
    constraint = engine.structured.start(grammar)
    accepted = 0
    tokens = engine.tokenize(TWO_CALLS)
    for token in tokens[1:] if tokens[0] == engine._model.token_bos() else tokens:
        if not constraint.allowed()[token]:
            break
        constraint.advance(token)
        accepted += 1
    assert (accepted == len(tokens)) == parallel
    if parallel:
        assert constraint.finished
    # Through the API: every call well formed; with false, one call at most.
    out = client.chat.completions.create(
        model=MODEL, max_tokens=80, tools=[WEATHER, TIME], tool_choice="required",
        parallel_tool_calls=parallel, temperature=0.8, seed=4,
        messages=[{"role": "user", "content": "Weather in Paris and time in UTC?"}])
    calls = out.choices[0].message.tool_calls
    assert out.choices[0].finish_reason == "tool_calls" and calls
    for call in calls:
        _check_call(call, [WEATHER, TIME])
    if not parallel:
        assert len(calls) == 1


def _conversation(api: httpx.Client) -> str:
    response = api.post("/v1/conversations", json={"system_prompt": ""})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def test_a_conversation_turn_with_a_json_schema(api: httpx.Client) -> None:
    cid = _conversation(api)
    turn = api.post(f"/v1/conversations/{cid}/messages", json={
        "content": "Describe a person as JSON.", "stream": False, "max_tokens": 80,
        "response_format": person_format()}).json()
    assert turn["message"]["finish_reason"] == "stop", turn
    jsonschema.validate(json.loads(turn["message"]["content"]), PERSON)
    stored = api.get(f"/v1/conversations/{cid}").json()["messages"][-1]
    assert stored["content"] == turn["message"]["content"]


def test_a_conversation_turn_stores_its_tool_calls(api: httpx.Client) -> None:
    cid = _conversation(api)
    with api.stream("POST", f"/v1/conversations/{cid}/messages", json={
            "content": WEATHER_Q[0]["content"], "max_tokens": 60, "tools": [WEATHER, TIME],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
            ) as response:
        assert response.status_code == 200
        frames = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: {")]
    pieces = [d for f in frames for c in f["choices"] for d in c["delta"].get("tool_calls") or []]
    assert pieces[0]["function"]["name"] == "get_weather" and pieces[0]["id"]
    streamed = "".join(p["function"].get("arguments") or "" for p in pieces)
    assert [c["finish_reason"] for f in frames for c in f["choices"]][-1] == "tool_calls"

    stored = api.get(f"/v1/conversations/{cid}").json()["messages"][-1]
    assert stored["finish_reason"] == "tool_calls" and not stored["incomplete"]
    (call,) = stored["tool_calls"]
    assert call["id"] == pieces[0]["id"] and call["function"]["name"] == "get_weather"
    assert call["function"]["arguments"] == streamed
    _check_call(openai.types.chat.ChatCompletionMessageToolCall.model_validate(call), [WEATHER])

    # The next turn is generated with the call in its history.
    turn = api.post(f"/v1/conversations/{cid}/messages", json={
        "content": "Thanks. Name the capital of Germany.", "stream": False,
        "max_tokens": 10, "temperature": 0}).json()
    assert turn["message"]["finish_reason"] in ("stop", "length")
    assert turn["message"]["tool_calls"] is None


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}},
     "response_format.json_schema.schema")], ids=["tool_choice", "schema"])
def test_a_bad_conversation_turn_is_a_400_and_stores_nothing(api: httpx.Client, extra: dict,
                                                             param: str) -> None:
    cid = _conversation(api)
    response = api.post(f"/v1/conversations/{cid}/messages",
                        json={"content": "hi", "stream": False, **extra})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert api.get(f"/v1/conversations/{cid}").json()["messages"] == []
