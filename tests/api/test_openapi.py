"""The OpenAPI schema describes what the server really answers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from starchart.api.app import create_app
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.settings import Settings

from tests.conftest import FRANCE

ERROR_REF = "#/components/schemas/ErrorResponse"
# The errors each route's own logic raises (the 400/401/413 every route shares
# are checked separately below).
OWN_ERRORS = {
    ("/v1/chat/completions", "post"): {404, 503},
    ("/v1/completions", "post"): {404, 503},
    ("/v1/models", "get"): set(),
    ("/v1/models/{name}/load", "post"): {404, 503},
    ("/v1/models/{name}/unload", "post"): {404, 409},
    ("/v1/defaults", "get"): set(),
    ("/v1/stats", "get"): set(),
    ("/health", "get"): set(),
    ("/ready", "get"): {503},
    ("/v1/doctor", "get"): {404},
    ("/v1/clip/classify", "post"): {404, 503},
    ("/v1/clip/similarity", "post"): {404, 503},
    ("/v1/embeddings", "post"): {404, 503},
    ("/v1/conversations", "post"): {404},
    ("/v1/conversations", "get"): set(),
    ("/v1/conversations/{conversation_id}", "get"): {404},
    ("/v1/conversations/{conversation_id}", "patch"): {404},
    ("/v1/conversations/{conversation_id}", "delete"): {404},
    ("/v1/conversations/{conversation_id}/export", "get"): {404},
    ("/v1/conversations/{conversation_id}/messages", "post"): {404, 503},
    ("/v1/conversations/{conversation_id}/messages/{message_id}", "delete"): {404},
}
STREAMING = {
    "/v1/chat/completions": "ChatCompletionChunk",
    "/v1/completions": "CompletionChunk",
    "/v1/conversations/{conversation_id}/messages": "ConversationChunk",
}
PUBLIC = {"/health", "/ready"}


@pytest.fixture
def schema(settings: Settings, engine: LlamaCppEngine) -> dict[str, Any]:
    return create_app(settings, engines=[engine]).openapi()


def operations(schema: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(path, method): op for path, ops in schema["paths"].items()
            for method, op in ops.items()}


def resolve(schema: dict[str, Any], ref: str) -> dict[str, Any]:
    name = ref.removeprefix("#/components/schemas/")
    return schema["components"]["schemas"][name]


def test_every_route_is_listed(schema: dict[str, Any]) -> None:
    assert set(operations(schema)) == set(OWN_ERRORS)


def test_errors_are_the_ones_really_sent(schema: dict[str, Any]) -> None:
    for (path, method), op in operations(schema).items():
        shared = {400} | ({401} if path not in PUBLIC else set())
        shared |= {413} if "requestBody" in op else set()
        errors = {int(s) for s in op["responses"] if int(s) >= 400}
        assert errors == shared | OWN_ERRORS[(path, method)], (path, method)
        assert "422" not in op["responses"]
        for status in errors - ({503} if path == "/ready" else set()):
            content = op["responses"][str(status)]["content"]["application/json"]
            assert content["schema"] == {"$ref": ERROR_REF}, (path, method, status)
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components and "ValidationError" not in components
    assert set(resolve(schema, ERROR_REF)["properties"]) == {"error"}


def test_streaming_routes_document_their_event_stream(schema: dict[str, Any]) -> None:
    for (path, _), op in operations(schema).items():
        content = op["responses"]["200"]["content"]
        if path not in STREAMING:
            assert "text/event-stream" not in content, path
            continue
        sse = content["text/event-stream"]
        chunk = resolve(schema, sse["x-starchart-chunk"]["$ref"])
        assert chunk["title"] == STREAMING[path] and "choices" in chunk["properties"]
        assert "[DONE]" in sse["schema"]["description"]
        assert content["application/json"]["schema"]["$ref"]  # stream: false


def test_json_answers_have_their_model(schema: dict[str, Any]) -> None:
    untyped = {("/v1/doctor", "get"), ("/v1/conversations/{conversation_id}/export", "get")}
    for key, op in operations(schema).items():
        if key in untyped:
            continue
        ref = op["responses"]["200"]["content"]["application/json"]["schema"].get("$ref")
        assert ref and resolve(schema, ref)["properties"], key


def test_the_statuses_a_server_sends_are_documented(api: httpx.Client,
                                                     settings: Settings) -> None:
    """Real answers from a live server, each checked against its route's schema."""
    ops = operations(api.get("/openapi.json").json())
    cases = [
        ("/v1/chat/completions", "post", {"messages": FRANCE, "max_tokens": 1}, 200),
        ("/v1/chat/completions", "post", {"messages": []}, 400),
        ("/v1/chat/completions", "post", {"messages": FRANCE, "model": "nope"}, 404),
        ("/v1/completions", "post", {"prompt": "a", "temperature": 9}, 400),
        ("/v1/conversations/{conversation_id}", "get", None, 404),
        ("/ready", "get", None, 200),
    ]
    for path, method, body, status in cases:
        url = path.replace("{conversation_id}", "conv-nope")
        response = api.request(method.upper(), url, json=body)
        assert response.status_code == status, (path, response.text)
        assert str(status) in ops[(path, method)]["responses"], (path, status)
    big = api.post("/v1/chat/completions", content=b"x" * (settings.max_body_bytes + 1),
                   headers={"content-type": "application/json"})
    assert big.status_code == 413
