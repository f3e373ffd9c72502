"""Continuing an answer cut at the length limit, and a turn's place in the
model's queue (issue 15), through the API on the embedded model."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.sync.client import connect

from tests.api.test_conversations_api import new_conversation, sse
from tests.conftest import model_kept_busy

# Greedy and without penalties: a continued answer must read exactly like one
# generated in one go (the penalties would see the earlier part as prompt).
GREEDY = {"temperature": 0, "repetition_penalty": 1.0, "stream": True}
QUESTION = "Write a long story about a lighthouse keeper and a storm."


def post(api: httpx.Client, cid: str, **body: object) -> list[dict]:
    with api.stream("POST", f"/v1/conversations/{cid}/messages",
                    json={**GREEDY, **body}) as response:
        assert response.status_code == 200, response.read()
        return sse(response)


def text_of(frames: list[dict]) -> str:
    return "".join(f["choices"][0]["delta"].get("content") or ""
                   for f in frames if f.get("choices"))


def messages(api: httpx.Client, cid: str) -> list[dict]:
    return api.get(f"/v1/conversations/{cid}").json()["messages"]


def test_continue_extends_the_stored_answer_as_if_never_cut(api: httpx.Client) -> None:
    whole = new_conversation(api)["id"]
    post(api, whole, content=QUESTION, max_tokens=24)
    expected = messages(api, whole)[-1]["content"]

    cid = new_conversation(api)["id"]
    post(api, cid, content=QUESTION, max_tokens=12)
    user, cut = messages(api, cid)
    assert cut["finish_reason"] == "length"

    frames = post(api, cid, max_tokens=12, **{"continue": True})
    info = frames[0]["starchart"]
    assert info["continued"] is True
    assert info["message_id"] == cut["id"] and info["user_message_id"] == user["id"]
    assert info["prompt_tokens"] > cut["usage"]["prompt_tokens"]  # the answer so far is prompt
    added = text_of(frames)
    assert added and [f["choices"][0]["finish_reason"] for f in frames
                      if f.get("choices") and f["choices"][0]["finish_reason"]] == ["length"]

    after = messages(api, cid)
    assert [m["id"] for m in after] == [user["id"], cut["id"]]  # no new turn
    reply = after[-1]
    assert reply["content"] == cut["content"] + added
    # The model went on with its answer, not a new one: greedy, the same text
    # as 24 tokens in one go.
    assert reply["content"] == expected
    assert reply["incomplete"] is False and reply["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 12
    assert reply["usage"]["prompt_tokens"] == info["prompt_tokens"]
    assert reply["timings"]["ttft_ms"] > 0 and reply["timings"] != cut["timings"]

    # Not streamed, the same: the whole answer comes back.
    turn = api.post(f"/v1/conversations/{cid}/messages",
                    json={**GREEDY, "stream": False, "max_tokens": 4, "continue": True}).json()
    assert turn["continued"] is True and turn["message_id"] == cut["id"]
    assert turn["message"]["content"].startswith(reply["content"])
    assert len(turn["message"]["content"]) > len(reply["content"])


def test_continue_refuses_what_it_cannot_do(api: httpx.Client) -> None:
    cid = new_conversation(api)["id"]
    url = f"/v1/conversations/{cid}/messages"

    def refused(**body: object) -> str | None:
        response = api.post(url, json={"stream": False, **body})
        assert response.status_code == 400, response.text
        return response.json()["error"]["param"]

    assert refused(**{"continue": True}) == "continue"  # nothing to continue yet
    post(api, cid, content="Say hello.", max_tokens=3)
    assert refused(content="x", **{"continue": True}) == "content"
    assert refused(regenerate=True, **{"continue": True}) == "content"
    schema = {"type": "json_schema",
              "json_schema": {"name": "a", "schema": {"type": "object"}}}
    assert refused(response_format=schema, **{"continue": True}) == "continue"
    user, reply = messages(api, cid)
    api.delete(f"{url}/{reply['id']}")
    assert refused(**{"continue": True}) == "continue"  # ends with the user's turn
    assert [m["id"] for m in messages(api, cid)] == [user["id"]]


def test_a_queued_turn_reports_its_place_until_its_first_token(one_slot_server) -> None:
    with httpx.Client(base_url=one_slot_server.url, timeout=120) as api:
        cid = new_conversation(api)["id"]
        with model_kept_busy(one_slot_server.url):
            queued = post(api, cid, content="Say hello.", max_tokens=3)

    # One ahead of it (the long answer): first in the queue; then, if the poll
    # catches it before its first token, out of the queue (null).
    reports = [f["queue"]["position"] for f in queued if "queue" in f]
    assert reports[:1] == [1] and set(reports) <= {1, None}, reports
    first_text = next(i for i, f in enumerate(queued)
                      if f.get("choices") and f["choices"][0]["delta"].get("content"))
    assert all(i < first_text for i, f in enumerate(queued) if "queue" in f)
    assert all(f["choices"] == [] for f in queued if "queue" in f)
    # Stored: the wait in the queue, and the prompt's speed measured without it.
    with httpx.Client(base_url=one_slot_server.url, timeout=120) as api:
        timings, usage = (messages(api, cid)[-1][k] for k in ("timings", "usage"))
    assert 0 < timings["queue_ms"] < timings["ttft_ms"]
    reading = (timings["ttft_ms"] - timings["queue_ms"]) / 1000
    assert timings["prompt_tokens_per_second"] == pytest.approx(
        usage["prompt_tokens"] / reading, rel=0.05)

    # A continuation given up while it still waits leaves the answer as it was.
    with httpx.Client(base_url=one_slot_server.url, timeout=120) as api:
        before = messages(api, cid)
        with model_kept_busy(one_slot_server.url):
            with api.stream("POST", f"/v1/conversations/{cid}/messages",
                            json={**GREEDY, "continue": True}) as response:
                for line in response.iter_lines():
                    if '"queue"' in line:
                        break  # the client leaves while the turn is queued
        assert messages(api, cid) == before


def test_websocket_continue_waits_in_the_queue_with_queue_frames(one_slot_server) -> None:
    with httpx.Client(base_url=one_slot_server.url, timeout=120) as api:
        cid = new_conversation(api)["id"]
        post(api, cid, content=QUESTION, max_tokens=6)
        cut = messages(api, cid)[-1]
        url = one_slot_server.url.replace("http://", "ws://") + f"/v1/conversations/{cid}/ws"
        with model_kept_busy(one_slot_server.url), connect(url) as ws:
            ws.send(json.dumps({**GREEDY, "continue": True, "max_tokens": 6}))
            frames = [json.loads(ws.recv(timeout=60))]
            while frames[-1]["type"] != "done":
                frames.append(json.loads(ws.recv(timeout=60)))
        reply = messages(api, cid)[-1]
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "queue" and frames[0]["position"] == 1
    assert "delta" in kinds and kinds.index("delta") > max(
        i for i, k in enumerate(kinds) if k == "queue")
    added = "".join(f["content"] for f in frames if f["type"] == "delta")
    assert frames[-1]["message_id"] == cut["id"]
    assert reply["content"] == cut["content"] + added
