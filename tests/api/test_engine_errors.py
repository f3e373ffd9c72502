"""An engine failing mid-stream, on every transport: the client is told, what was
said is stored and marked incomplete (a scripted engine in the real app)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from starchart.api.app import create_app
from starchart.errors import StarchartError
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port
from tests.scripted_engine import ScriptedEngine

FAILURE = "the scripted engine failed mid-reply"


@pytest.fixture
def server(settings: Settings) -> Iterator[LiveServer]:
    engine = ScriptedEngine(["Hello", ", wor"], error=StarchartError(FAILURE))
    engine.load()
    with LiveServer(create_app(settings, engines=[engine]), free_port()) as live:
        yield live


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def frames(response: httpx.Response) -> list[str]:
    return [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]


def new_conversation(http: httpx.Client) -> str:
    return http.post("/v1/conversations", json={}).json()["id"]


def assert_stored_incomplete(http: httpx.Client, conversation_id: str) -> None:
    user, reply = http.get(f"/v1/conversations/{conversation_id}").json()["messages"]
    assert user["role"] == "user" and not user["incomplete"]
    assert reply["role"] == "assistant" and reply["incomplete"] is True
    assert reply["content"] == "Hello, wor" and reply["finish_reason"] == "error"


def test_chat_stream_sends_the_error_before_done(http: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        sent = frames(response)
    assert sent[-1] == "[DONE]"
    chunks = [json.loads(f) for f in sent[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == "Hello, wor"
    assert chunks[-1] == {"error": {"message": FAILURE, "type": "server_error", "param": None,
                                    "code": "internal_error"}}


def test_a_whole_reply_fails_with_the_error_body(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions",
                         json={"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 500
    assert response.json()["error"]["message"] == FAILURE


def test_conversation_stream_sends_the_error_and_stores_the_partial_reply(
        http: httpx.Client) -> None:
    conv = new_conversation(http)
    with http.stream("POST", f"/v1/conversations/{conv}/messages",
                     json={"content": "hi"}) as response:
        sent = frames(response)
    assert sent[-1] == "[DONE]"
    assert json.loads(sent[-2])["error"]["message"] == FAILURE
    assert_stored_incomplete(http, conv)


def test_websocket_sends_an_error_frame_and_stores_the_partial_reply(
        http: httpx.Client, server: LiveServer) -> None:
    conv = new_conversation(http)
    url = server.url.replace("http://", "ws://") + f"/v1/conversations/{conv}/ws"
    with connect(url) as ws:
        ws.send(json.dumps({"content": "hi"}))
        received = [json.loads(ws.recv(timeout=30))]
        while received[-1]["type"] == "delta":
            received.append(json.loads(ws.recv(timeout=30)))
        assert "".join(f["content"] for f in received[:-1]) == "Hello, wor"
        assert received[-1] == {"type": "error", "error": {
            "message": FAILURE, "type": "server_error", "param": None, "code": "internal_error"}}
    assert_stored_incomplete(http, conv)
