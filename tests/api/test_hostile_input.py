"""Requests found by hostile testing: each a 400 naming the field, never a 500.

Bodies are sent as raw bytes with ``json.dumps``' ASCII escapes, so a lone
surrogate reaches the server exactly as a hostile client writes it: ``"\\ud800"``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from pydantic import BaseModel

from starchart.api.app import create_app
from starchart.api.bodies import parse
from starchart.api.clip_protocol import ClassifyRequest, EmbeddingRequest, SimilarityRequest
from starchart.api.conversation_protocol import CONTENT_MAX, SYSTEM_PROMPT_MAX, TITLE_MAX
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.errors import BadRequest
from starchart.registry import EMBEDDED_NAME, embedded_gguf
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port

LONE = "\ud800"
USER = [{"role": "user", "content": "Hi"}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def post(api: httpx.Client, path: str, body: object, **headers: str) -> httpx.Response:
    return api.post(path, content=json.dumps(body).encode("ascii"),
                    headers={"content-type": "application/json", **headers})


def assert_400(response: httpx.Response, param: str | None, code: str = "invalid_value"
               ) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code), error
    return str(error["message"])


# (route, body, the param the 400 names)
SURROGATES = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": f"a{LONE}b"}]},
     "messages[0].content"),
    ("/v1/chat/completions", {"messages": [{"role": "system", "content": LONE}, *USER]},
     "messages[0].content"),
    ("/v1/chat/completions",
     {"messages": [{"role": "user", "content": [{"type": "text", "text": LONE}]}]},
     "messages[0].content[0].text"),
    ("/v1/chat/completions", {"messages": USER, "stop": [f"x{LONE}"]}, "stop[0]"),
    ("/v1/chat/completions", {"messages": USER, "stop": LONE}, "stop"),
    ("/v1/chat/completions",
     {"messages": [*USER, {"role": "assistant", "tool_calls": [
         {**CALL, "function": {"name": "f", "arguments": f'{{"a": "{LONE}"}}'}}]}]},
     "messages[1].tool_calls[0].function.arguments"),
    ("/v1/chat/completions",
     {"messages": USER, "tools": [{"type": "function", "function": {
         "name": "f", "parameters": {"type": "object", "properties": {LONE: {}}}}}]},
     "tools[0].function.parameters"),
    ("/v1/chat/completions", {"messages": USER, "model": LONE}, "model"),
    ("/v1/completions", {"prompt": LONE}, "prompt"),
    ("/v1/completions", {"prompt": [LONE]}, "prompt[0]"),
    ("/v1/completions", {"prompt": LONE, "stream": True}, "prompt"),
    ("/v1/conversations", {"system_prompt": LONE}, "system_prompt"),
    ("/v1/conversations", {"title": LONE}, "title"),
    ("/v1/conversations", {"messages": [{"role": "user", "content": LONE}]},
     "messages[0].content"),
]


@pytest.mark.parametrize("path,body,param", SURROGATES,
                         ids=[f"{p}:{param}" for p, _, param in SURROGATES])
def test_lone_surrogate_is_400_naming_the_field(api: httpx.Client, caplog: pytest.LogCaptureFixture,
                                                path: str, body: object, param: str) -> None:
    caplog.set_level(logging.INFO)
    message = assert_400(post(api, path, body), param)
    assert "surrogate" in message
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


@pytest.mark.parametrize("model,body,param", [
    (EmbeddingRequest, {"input": ["ok", LONE]}, "input[1]"),
    (ClassifyRequest, {"image": "data:,", "labels": [LONE]}, "labels[0]"),
    (SimilarityRequest, {"images": [], "texts": [LONE]}, "texts[0]"),
])
def test_clip_requests_refuse_lone_surrogates(model: type[BaseModel], body: dict[str, object],
                                              param: str) -> None:
    # The CLIP routes parse with the same protocol types (a CLIP model is not needed).
    with pytest.raises(BadRequest) as caught:
        parse(model, body)
    assert caught.value.param == param and "surrogate" in caught.value.message


def test_lone_surrogate_in_conversation_edits(api: httpx.Client) -> None:
    conv = post(api, "/v1/conversations", {"system_prompt": ""}).json()
    patch = api.patch(f"/v1/conversations/{conv['id']}",
                      content=json.dumps({"system_prompt": f"be {LONE}"}).encode("ascii"),
                      headers={"content-type": "application/json"})
    assert "surrogate" in assert_400(patch, "system_prompt")
    turn = post(api, f"/v1/conversations/{conv['id']}/messages",
                {"content": LONE, "stream": False})
    assert "surrogate" in assert_400(turn, "content")
    stored = api.get(f"/v1/conversations/{conv['id']}").json()
    assert stored["system_prompt"] == "" and stored["messages"] == []


@pytest.mark.parametrize("prompt,param", [("", "prompt"), ([""], "prompt[0]"), ([], "prompt")])
@pytest.mark.parametrize("stream", [False, True])
def test_empty_completion_prompt_is_400(api: httpx.Client, prompt: object, param: str,
                                        stream: bool) -> None:
    assert_400(post(api, "/v1/completions", {"prompt": prompt, "stream": stream}), param)


STRICT = [
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"max_tokens": 5.5}, "max_tokens"),
    ({"temperature": "0.5"}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"top_p": "1"}, "top_p"),
    ({"top_k": 2.5}, "top_k"),
    ({"seed": "7"}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"stream": "true"}, "stream"),
    ({"stream": 1}, "stream"),
    ({"n": True}, "n"),
    ({"repetition_penalty": 1e9}, "repetition_penalty"),
]


@pytest.mark.parametrize("fields,param", STRICT, ids=[p for _, p in STRICT])
def test_numbers_and_bools_are_strict(api: httpx.Client, fields: dict[str, object],
                                      param: str) -> None:
    assert_400(post(api, "/v1/chat/completions", {"messages": USER, **fields}), param)


def test_non_finite_numbers_are_400(api: httpx.Client) -> None:
    # Python's JSON parser reads NaN and Infinity; they are not numbers to sample with.
    for literal in (b"NaN", b"Infinity"):
        body = b'{"messages": [{"role": "user", "content": "Hi"}], "temperature": ' + literal
        response = api.post("/v1/chat/completions", content=body + b"}",
                            headers={"content-type": "application/json"})
        assert_400(response, "temperature")


def test_an_int_is_a_valid_float(api: httpx.Client) -> None:
    response = post(api, "/v1/chat/completions",
                    {"messages": USER, "temperature": 0, "top_p": 1, "max_tokens": 1})
    assert response.status_code == 200, response.text


UNSUPPORTED = [
    ("/v1/chat/completions", {"logit_bias": {"50256": -100}}, "logit_bias"),
    ("/v1/chat/completions", {"functions": [{"name": "f"}]}, "functions"),
    ("/v1/chat/completions", {"function_call": "auto"}, "function_call"),
    ("/v1/chat/completions", {"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ("/v1/chat/completions", {"modalities": ["text", "audio"]}, "modalities[1]"),
    ("/v1/chat/completions", {"prediction": {"type": "content", "content": "x"}},
     "prediction"),
    ("/v1/chat/completions", {"n": 2}, "n"),
    ("/v1/chat/completions", {"top_logprobs": 2}, "top_logprobs"),
    ("/v1/chat/completions", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("/v1/completions", {"best_of": 3}, "best_of"),
    ("/v1/completions", {"logit_bias": {"1": 1}}, "logit_bias"),
    ("/v1/completions", {"echo": True}, "echo"),
]


@pytest.mark.parametrize("path,fields,param", UNSUPPORTED, ids=[u[2] for u in UNSUPPORTED])
def test_unimplemented_openai_fields_are_400(api: httpx.Client, path: str,
                                             fields: dict[str, object], param: str) -> None:
    body = {"messages": USER} if path.endswith("chat/completions") else {"prompt": "Hi"}
    assert_400(post(api, path, {**body, **fields}), param)


def test_empty_logit_bias_changes_nothing_and_is_accepted(api: httpx.Client) -> None:
    response = post(api, "/v1/chat/completions",
                    {"messages": USER, "logit_bias": {}, "max_tokens": 1, "user": "me"})
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def small_window(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LlamaCppEngine]]:
    """A server whose model has a 256-token window: filling it is quick."""
    engine = LlamaCppEngine(EMBEDDED_NAME, embedded_gguf(), n_ctx=256, parallel=1)
    engine.load()
    settings = Settings(home=tmp_path_factory.mktemp("home"), n_ctx=256)
    try:
        with LiveServer(create_app(settings, engines=[engine]), free_port()) as server:
            yield server.url, engine
    finally:
        engine.close()


def test_max_tokens_beyond_the_window_is_clamped(
        small_window: tuple[str, LlamaCppEngine]) -> None:
    """The documented choice: max_tokens is clamped to the room the context window leaves
    after the prompt, and the answer ends with finish_reason "length"."""
    url, engine = small_window
    n_ctx = engine.info.n_ctx
    unit = " one two three four"
    repeats = 1
    while len(engine.tokenize(unit * repeats)) < n_ctx - 6:
        repeats += 1
    prompt = unit * repeats
    prompt_tokens = len(engine.tokenize(prompt))
    room = n_ctx - prompt_tokens
    assert 0 < room <= 10
    with httpx.Client(base_url=url, timeout=120) as api:
        out = post(api, "/v1/completions", {"prompt": prompt, "max_tokens": 10**12,
                                            "ignore_eos": True, "temperature": 0}).json()
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": room,
                            "total_tokens": n_ctx}


def test_curl_style_form_content_type_is_read_as_json(api: httpx.Client) -> None:
    body = json.dumps({"messages": USER, "max_tokens": 1}).encode()
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = {"content-type": content_type} if content_type else {}
        response = api.post("/v1/chat/completions", content=body, headers=headers)
        assert response.status_code == 200, (content_type, response.text)


def test_a_browser_page_must_declare_json(api: httpx.Client) -> None:
    # A page on any site may post text/plain anywhere without a preflight (CSRF).
    body = json.dumps({"title": "forged"}).encode()
    response = api.post("/v1/conversations", content=body,
                        headers={"content-type": "text/plain",
                                 "origin": "https://evil.example"})
    assert_400(response, "Content-Type", "unsupported_media_type")
    assert api.get("/v1/conversations").json()["data"] == []


def test_empty_body_says_what_is_missing(api: httpx.Client) -> None:
    response = api.post("/v1/chat/completions", content=b"",
                        headers={"content-type": "application/json"})
    message = assert_400(response, None, "missing_required_parameter")
    assert "None" not in message and "body" in message


CAPS = [
    ({"title": "t" * (TITLE_MAX + 1)}, "title"),
    ({"system_prompt": "s" * (SYSTEM_PROMPT_MAX + 1)}, "system_prompt"),
    ({"messages": [{"role": "user", "content": "c" * (CONTENT_MAX + 1)}]},
     "messages[0].content"),
]


@pytest.mark.parametrize("fields,param", CAPS, ids=[c[1] for c in CAPS])
def test_stored_text_fields_are_capped(api: httpx.Client, fields: dict[str, object],
                                       param: str) -> None:
    assert_400(post(api, "/v1/conversations", fields), param)


def test_capped_turn_content_and_system_prompt_update(api: httpx.Client) -> None:
    conv = post(api, "/v1/conversations", {"system_prompt": "s" * SYSTEM_PROMPT_MAX}).json()
    assert len(conv["system_prompt"]) == SYSTEM_PROMPT_MAX  # the cap itself is allowed
    turn = post(api, f"/v1/conversations/{conv['id']}/messages",
                {"content": "c" * (CONTENT_MAX + 1), "stream": False})
    assert_400(turn, "content")
    patch = api.patch(f"/v1/conversations/{conv['id']}",
                      json={"system_prompt": "s" * (SYSTEM_PROMPT_MAX + 1)})
    assert_400(patch, "system_prompt")
