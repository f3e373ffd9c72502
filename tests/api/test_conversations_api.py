"""/v1/conversations on a live server with the real model and a real SQLite file."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import closing

import httpx
import pytest
from websockets.sync.client import connect

from starchart.api.app import create_app
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.registry import EMBEDDED_NAME, embedded_gguf
from starchart.settings import Settings
from starchart.store import Store

from tests.conftest import LiveServer, free_port

FRANCE_Q = "What is the capital of France?"


@pytest.fixture
def store(settings: Settings, live_server) -> Iterator[Store]:
    s = Store.open(settings)  # a second connection to the server's database file
    yield s
    s.close()


def sse(response: httpx.Response) -> list[dict]:
    frames = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    return [json.loads(f) for f in frames[:-1]]


def new_conversation(api: httpx.Client, **fields: object) -> dict:
    response = api.post("/v1/conversations", json={"system_prompt": "", **fields})
    assert response.status_code == 200, response.text
    return response.json()


def test_create_list_read_rename_delete(api: httpx.Client) -> None:
    first = new_conversation(api, title="first")
    second = new_conversation(api)
    assert first["object"] == "conversation" and first["messages"] == []
    assert first["system_prompt"] == "" and first["model"] is None
    listed = api.get("/v1/conversations").json()
    assert listed["object"] == "list"
    assert [c["id"] for c in listed["data"]] == [second["id"], first["id"]]  # newest first
    assert "messages" not in listed["data"][0]
    patched = api.patch(f"/v1/conversations/{first['id']}",
                        json={"title": "renamed", "system_prompt": "Be brief."}).json()
    assert patched["title"] == "renamed" and patched["system_prompt"] == "Be brief."
    assert api.get("/v1/conversations").json()["data"][0]["id"] == first["id"]  # touched
    assert api.patch(f"/v1/conversations/{first['id']}",
                     json={"system_prompt": None}).json()["system_prompt"] is None
    deleted = api.delete(f"/v1/conversations/{first['id']}").json()
    assert deleted == {"id": first["id"], "object": "conversation.deleted", "deleted": True}
    assert api.get(f"/v1/conversations/{first['id']}").status_code == 404
    assert [c["id"] for c in api.get("/v1/conversations").json()["data"]] == [second["id"]]


def test_a_streamed_turn_is_chat_completion_sse_and_is_stored(api: httpx.Client) -> None:
    conv = new_conversation(api)
    body = {"content": FRANCE_Q, "temperature": 0, "max_tokens": 32}
    with api.stream("POST", f"/v1/conversations/{conv['id']}/messages", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        chunks = sse(r)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    extra = chunks[0]["starchart"]
    assert extra["conversation_id"] == conv["id"] and extra["dropped_turns"] == 0
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    usage = chunks[-1]["usage"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:-1])
    assert "Paris" in text

    stored = api.get(f"/v1/conversations/{conv['id']}").json()
    assert stored["title"] == FRANCE_Q
    user, reply = stored["messages"]
    assert (user["role"], user["content"], user["incomplete"]) == ("user", FRANCE_Q, False)
    assert reply["id"] == extra["message_id"] and reply["role"] == "assistant"
    assert reply["content"] == text and reply["incomplete"] is False
    assert reply["usage"] == usage and reply["finish_reason"] == "stop"
    # What produced the reply is kept with it.
    assert reply["params"]["system_prompt"] == ""
    assert reply["params"]["temperature"] == 0 and reply["params"]["max_tokens"] == 32
    assert reply["model"] == chunks[0]["model"]


def test_the_next_turn_sees_the_history(api: httpx.Client) -> None:
    conv = new_conversation(api)
    url = f"/v1/conversations/{conv['id']}/messages"
    first = api.post(url, json={"content": FRANCE_Q, "temperature": 0, "stream": False,
                                "max_tokens": 32}).json()
    second = api.post(url, json={"content": "And of Germany?", "temperature": 0,
                                 "stream": False, "max_tokens": 32}).json()
    assert first["object"] == "conversation.turn" and first["dropped_turns"] == 0
    assert "Paris" in first["message"]["content"]
    assert "Berlin" in second["message"]["content"]
    # The whole first exchange is in the second prompt.
    assert second["usage"]["prompt_tokens"] > (first["usage"]["prompt_tokens"]
                                              + first["usage"]["completion_tokens"])
    roles = [m["role"] for m in api.get(f"/v1/conversations/{conv['id']}").json()["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]


def test_the_conversation_system_prompt_is_used_and_stored(api: httpx.Client) -> None:
    conv = new_conversation(api, system_prompt="Always answer in French.")
    out = api.post(f"/v1/conversations/{conv['id']}/messages",
                   json={"content": "hi", "stream": False, "max_tokens": 4}).json()
    assert out["message"]["params"]["system_prompt"] == "Always answer in French."
    plain = new_conversation(api)
    out2 = api.post(f"/v1/conversations/{plain['id']}/messages",
                    json={"content": "hi", "stream": False, "max_tokens": 4}).json()
    assert out["usage"]["prompt_tokens"] > out2["usage"]["prompt_tokens"]


def test_export_as_json_and_markdown(api: httpx.Client) -> None:
    conv = new_conversation(api, title="Capitals")
    api.post(f"/v1/conversations/{conv['id']}/messages",
             json={"content": FRANCE_Q, "temperature": 0, "stream": False, "max_tokens": 32})
    as_json = api.get(f"/v1/conversations/{conv['id']}/export")
    assert as_json.headers["content-disposition"].endswith(f'{conv["id"]}.json"')
    assert as_json.json() == api.get(f"/v1/conversations/{conv['id']}").json()
    md = api.get(f"/v1/conversations/{conv['id']}/export", params={"format": "markdown"})
    assert md.headers["content-type"].startswith("text/markdown")
    assert md.text.startswith("# Capitals\n")
    assert f"## User\n\n{FRANCE_Q}\n\n## Assistant\n\n" in md.text and "Paris" in md.text
    bad = api.get(f"/v1/conversations/{conv['id']}/export", params={"format": "pdf"})
    assert bad.status_code == 400 and bad.json()["error"]["param"].endswith("format")


@pytest.fixture(scope="module")
def small_engine() -> Iterator[LlamaCppEngine]:
    """A 512-token context: overflowing it takes a short history and little CPU."""
    eng = LlamaCppEngine(EMBEDDED_NAME, embedded_gguf(), n_ctx=512)
    eng.load()
    yield eng
    eng.close()


def test_a_long_history_drops_the_oldest_turns_instead_of_failing(
        settings: Settings, small_engine: LlamaCppEngine) -> None:
    with LiveServer(create_app(settings, engines=[small_engine]), free_port()) as server, \
            httpx.Client(base_url=server.url, timeout=120) as api, closing(
                Store.open(settings)) as store:
        conv = new_conversation(api)
        for i in range(12):  # ~1,000 tokens of history for a 512-token context
            store.conversations.add_message(conv["id"], None, "user", f"q{i} " + "word " * 40)
            store.conversations.add_message(conv["id"], None, "assistant",
                                            f"a{i} " + "word " * 40)
        out = api.post(f"/v1/conversations/{conv['id']}/messages",
                       json={"content": "Say hi.", "stream": False, "max_tokens": 8})
        assert out.status_code == 200, out.text
        dropped = out.json()["dropped_turns"]
        assert 0 < dropped < 24 and dropped % 2 == 0
        assert out.json()["message"]["dropped_turns"] == dropped
        assert out.json()["usage"]["prompt_tokens"] <= 512 - 8

        # A message that alone cannot fit: a 400 naming it, and nothing stored.
        huge = api.post(f"/v1/conversations/{conv['id']}/messages",
                        json={"content": "word " * 1000, "stream": True})
        assert huge.status_code == 400
        assert huge.json()["error"]["code"] == "context_length_exceeded"
        assert huge.json()["error"]["param"] == "content"
        assert len(api.get(f"/v1/conversations/{conv['id']}").json()["messages"]) == 26


def test_bad_requests_say_what_is_wrong(api: httpx.Client) -> None:
    conv = new_conversation(api)
    url = f"/v1/conversations/{conv['id']}/messages"
    cases = [
        (api.post(url, json={}), 400, "content"),
        (api.post(url, json={"content": ""}), 400, "content"),
        (api.post(url, json={"content": "hi", "temperature": 9}), 400, "temperature"),
        (api.post("/v1/conversations/conv_nope/messages", json={"content": "hi"}), 404,
         "conversation_id"),
        (api.post("/v1/conversations", json={"model": "gpt-9"}), 404, "model"),
        (api.post("/v1/conversations", json={"colour": "red"}), 400, "colour"),
        (api.patch(f"/v1/conversations/{conv['id']}", json={"title": 3}), 400, "title"),
        (api.get("/v1/conversations", params={"limit": 0}), 400, "limit"),
    ]
    for response, status, param in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["param"].endswith(param), response.text
    assert api.get(f"/v1/conversations/{conv['id']}").json()["messages"] == []


def test_a_client_disconnect_stores_the_partial_reply_and_stops_generating(
        api: httpx.Client, engine) -> None:
    conv = new_conversation(api)
    body = {"content": "Tell me a long story.", "ignore_eos": True, "max_tokens": 1500}
    received = ""
    with api.stream("POST", f"/v1/conversations/{conv['id']}/messages", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                chunk = json.loads(line[6:])
                received += chunk["choices"][0]["delta"].get("content", "")
                if len(received) > 20:
                    break
    reply = wait_for_reply(api, conv["id"], lambda m: m["finish_reason"] is not None)
    assert reply["finish_reason"] == "cancelled" and reply["incomplete"] is True
    assert reply["content"].startswith(received) and reply["usage"] is None
    before = engine.tokens_generated
    time.sleep(1)
    # Nobody is generating for a gone client (one token may have been in flight).
    assert engine.tokens_generated - before <= 1
    assert len(reply["content"]) < 1500  # it stopped long before max_tokens


def wait_for_reply(api: httpx.Client, conv_id: str, done, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = api.get(f"/v1/conversations/{conv_id}").json()["messages"]
        if messages and messages[-1]["role"] == "assistant" and done(messages[-1]):
            return messages[-1]
        time.sleep(0.05)
    raise AssertionError(f"reply not stored: {messages}")


def _post_all(api_url: str, jobs: list[tuple[str, str]]) -> list[httpx.Response]:
    results: list[httpx.Response | Exception | None] = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def run(i: int, conv_id: str, content: str) -> None:
        with httpx.Client(base_url=api_url, timeout=120) as client:
            barrier.wait()
            try:
                results[i] = client.post(f"/v1/conversations/{conv_id}/messages",
                    json={"content": content, "max_tokens": 6, "temperature": 0,
                          "stream": i % 2 == 0})
            except httpx.HTTPError as exc:
                results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c, m)) for i, (c, m) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(r, httpx.Response) and r.status_code == 200
               for r in results), results
    return results  # type: ignore[return-value]


def test_16_concurrent_turns_on_16_conversations_are_each_stored_once_in_order(
        api: httpx.Client, live_server) -> None:
    convs = [new_conversation(api)["id"] for _ in range(16)]
    for round_ in range(2):
        _post_all(live_server.url, [(c, f"round {round_} for {c}") for c in convs])
    for conv_id in convs:
        messages = api.get(f"/v1/conversations/{conv_id}").json()["messages"]
        assert [(m["role"], m["content"]) for m in messages if m["role"] == "user"] == [
            ("user", f"round {r} for {conv_id}") for r in range(2)]
        assert [m["role"] for m in messages] == ["user", "assistant"] * 2
        assert all(not m["incomplete"] for m in messages)
        assert all(m["finish_reason"] in ("stop", "length")
                   for m in messages if m["role"] == "assistant")


def test_two_turns_on_one_conversation_are_serialised(api: httpx.Client, live_server) -> None:
    conv_id = new_conversation(api)["id"]
    _post_all(live_server.url, [(conv_id, f"message {i}") for i in range(4)])
    messages = api.get(f"/v1/conversations/{conv_id}").json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 4
    # Each reply saw every turn before it, never a half-written one.
    prompts = [m["usage"]["prompt_tokens"] for m in messages if m["role"] == "assistant"]
    assert prompts == sorted(prompts) and len(set(prompts)) == 4


def ws_url(live_server, conv_id: str) -> str:
    return live_server.url.replace("http://", "ws://") + f"/v1/conversations/{conv_id}/ws"


def test_websocket_streams_a_turn_and_stores_it(api: httpx.Client, live_server) -> None:
    conv_id = new_conversation(api)["id"]
    with connect(ws_url(live_server, conv_id)) as ws:
        ws.send(json.dumps({"content": FRANCE_Q, "temperature": 0, "max_tokens": 32}))
        frames = []
        while not frames or frames[-1]["type"] == "delta":
            frames.append(json.loads(ws.recv(timeout=60)))
        done = frames[-1]
        assert done["type"] == "done" and done["finish_reason"] == "stop"
        text = "".join(f["content"] for f in frames[:-1])
        assert "Paris" in text
        # Errors come back as frames and the socket stays usable.
        ws.send(json.dumps({"content": ""}))
        error = json.loads(ws.recv(timeout=10))
        assert error["type"] == "error" and error["error"]["param"] == "content"
        ws.send(json.dumps({"content": "And Germany?", "temperature": 0, "max_tokens": 16}))
        while (frame := json.loads(ws.recv(timeout=60)))["type"] == "delta":
            pass
        assert frame["type"] == "done"
    messages = api.get(f"/v1/conversations/{conv_id}").json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2
    assert messages[1]["id"] == done["message_id"] and messages[1]["content"] == text
    assert messages[1]["usage"] == done["usage"]


def test_websocket_stop_frame_stops_and_keeps_the_partial_reply(
        api: httpx.Client, live_server) -> None:
    conv_id = new_conversation(api)["id"]
    with connect(ws_url(live_server, conv_id)) as ws:
        ws.send(json.dumps({"content": "Tell me a story.", "ignore_eos": True,
                            "max_tokens": 1500}))
        for _ in range(3):
            assert json.loads(ws.recv(timeout=60))["type"] == "delta"
        ws.send(json.dumps({"type": "stop"}))
        while (frame := json.loads(ws.recv(timeout=60)))["type"] == "delta":
            pass
        assert frame["type"] == "done" and frame["finish_reason"] == "cancelled"
    reply = api.get(f"/v1/conversations/{conv_id}").json()["messages"][-1]
    assert reply["incomplete"] is True and reply["content"]


def test_websocket_to_an_unknown_conversation_gets_an_error_frame(live_server) -> None:
    with connect(ws_url(live_server, "conv_nope")) as ws:
        frame = json.loads(ws.recv(timeout=10))
        assert frame["type"] == "error" and frame["error"]["code"] == "not_found"


def test_a_reply_being_generated_does_not_block_other_conversations(
        api: httpx.Client, live_server) -> None:
    busy, other = new_conversation(api)["id"], new_conversation(api)["id"]
    body = {"content": "Tell me a long story.", "ignore_eos": True, "max_tokens": 1500}
    with api.stream("POST", f"/v1/conversations/{busy}/messages", json=body) as r:
        lines = r.iter_lines()
        while '"content": "' not in next(lines):  # generation is under way
            pass
        # Reads and writes elsewhere go through while the reply streams (and
        # while its partial text is being flushed to the same database file).
        assert api.get(f"/v1/conversations/{other}").status_code == 200
        assert api.patch(f"/v1/conversations/{other}", json={"title": "t"}).status_code == 200
        assert api.post("/v1/conversations").status_code == 200
        assert len(api.get("/v1/conversations").json()["data"]) == 3
        reply = api.get(f"/v1/conversations/{busy}").json()["messages"][-1]
        assert reply["incomplete"] is True and reply["finish_reason"] is None  # still going


def test_regenerate_replaces_the_last_answer(api: httpx.Client) -> None:
    conv = new_conversation(api)
    url = f"/v1/conversations/{conv['id']}/messages"
    first = api.post(url, json={"content": FRANCE_Q, "temperature": 0, "stream": False,
                                "max_tokens": 32}).json()
    assert "Paris" in first["message"]["content"]
    with api.stream("POST", url, json={"regenerate": True, "temperature": 0,
                                       "max_tokens": 32}) as response:
        assert response.status_code == 200
        chunks = sse(response)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == first["message"]["content"]  # same question, greedy: same answer
    messages = api.get(f"/v1/conversations/{conv['id']}").json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == FRANCE_Q
    assert messages[1]["id"] != first["message"]["id"] and messages[1]["content"] == text
    assert chunks[0]["starchart"]["user_message_id"] == messages[0]["id"]


def test_regenerate_needs_a_user_turn_and_no_content(api: httpx.Client) -> None:
    conv = new_conversation(api)
    url = f"/v1/conversations/{conv['id']}/messages"
    empty = api.post(url, json={"regenerate": True, "stream": False})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "regenerate"
    both = api.post(url, json={"regenerate": True, "content": "hi"})
    assert both.status_code == 400 and both.json()["error"]["param"] == "content"
    assert api.get(f"/v1/conversations/{conv['id']}").json()["messages"] == []
