"""Editing a stored conversation: delete a message, edit a turn and resend,
import, search, and the reply's speed kept with it (issue 15)."""

from __future__ import annotations

import httpx

from tests.api.test_conversations_api import new_conversation, sse


def turn(api: httpx.Client, cid: str, **body: object) -> list[dict]:
    with api.stream("POST", f"/v1/conversations/{cid}/messages",
                    json={"max_tokens": 4, "temperature": 0, **body}) as response:
        assert response.status_code == 200, response.read()
        return sse(response)


def messages(api: httpx.Client, cid: str) -> list[dict]:
    return api.get(f"/v1/conversations/{cid}").json()["messages"]


def test_reply_timings_are_stored_for_complete_and_stopped_replies(api: httpx.Client) -> None:
    cid = new_conversation(api)["id"]
    turn(api, cid, content="Name the capital of Germany.", max_tokens=8)
    timings = messages(api, cid)[-1]["timings"]
    assert timings["ttft_ms"] > 0
    assert timings["prompt_tokens_per_second"] > 0 and timings["tokens_per_second"] > 0
    # Stopped early (the client leaves): the figures are kept all the same.
    with api.stream("POST", f"/v1/conversations/{cid}/messages",
                    json={"content": "Tell a long story.", "max_tokens": 500,
                          "ignore_eos": True}) as response:
        for n, _ in enumerate(response.iter_lines()):
            if n > 30:
                break
    for _ in range(100):
        reply = messages(api, cid)[-1]
        if reply["finish_reason"] == "cancelled":
            break
        httpx.get(str(api.base_url) + "/health")
    assert reply["incomplete"] is True and reply["timings"]["tokens_per_second"] > 0


def test_delete_one_message(api: httpx.Client) -> None:
    cid = new_conversation(api)["id"]
    turn(api, cid, content="Hello")
    user, reply = messages(api, cid)
    deleted = api.delete(f"/v1/conversations/{cid}/messages/{reply['id']}").json()
    assert deleted == {"id": reply["id"], "object": "conversation.message.deleted",
                       "deleted": True}
    assert [m["id"] for m in messages(api, cid)] == [user["id"]]
    missing = api.delete(f"/v1/conversations/{cid}/messages/{reply['id']}")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "message_id"


def test_edit_a_turn_replaces_it_and_everything_after(api: httpx.Client) -> None:
    cid = new_conversation(api)["id"]
    turn(api, cid, content="First question")
    turn(api, cid, content="Second question")
    first_user, first_reply, second_user, _ = messages(api, cid)
    frames = turn(api, cid, content="Second question, edited", replace=second_user["id"])
    assert frames[0]["starchart"]["user_message_id"] != second_user["id"]
    now = messages(api, cid)
    assert [m["id"] for m in now[:2]] == [first_user["id"], first_reply["id"]]
    assert [(m["role"], m["content"]) for m in now[2:3]] == [("user", "Second question, edited")]
    assert len(now) == 4 and now[3]["role"] == "assistant"
    # Editing the first turn leaves only the new pair.
    turn(api, cid, content="Only question", replace=first_user["id"])
    assert [m["content"] for m in messages(api, cid)][:1] == ["Only question"]
    assert len(messages(api, cid)) == 2
    wrong = api.post(f"/v1/conversations/{cid}/messages",
                     json={"content": "x", "replace": now[3]["id"]})  # an assistant message
    assert wrong.status_code == 404 and wrong.json()["error"]["param"] == "replace"
    both = api.post(f"/v1/conversations/{cid}/messages",
                    json={"regenerate": True, "replace": now[0]["id"]})
    assert both.status_code == 400


def test_import_an_exported_conversation_and_search(api: httpx.Client) -> None:
    cid = new_conversation(api, title="Lighthouses")["id"]
    turn(api, cid, content="Tell me about the Fresnel lens.")
    exported = api.get(f"/v1/conversations/{cid}/export").json()
    body = {"title": exported["title"], "system_prompt": exported["system_prompt"],
            "messages": [{"role": m["role"], "content": m["content"]}
                         for m in exported["messages"]]}
    imported = api.post("/v1/conversations", json=body).json()
    assert imported["id"] != cid and imported["title"] == "Lighthouses"
    assert ([(m["role"], m["content"]) for m in messages(api, imported["id"])]
            == [(m["role"], m["content"]) for m in exported["messages"]])
    other = new_conversation(api, title="Trains")["id"]
    found = api.get("/v1/conversations", params={"search": "FRESNEL"}).json()["data"]
    assert {c["id"] for c in found} == {cid, imported["id"]}
    assert [c["id"] for c in api.get("/v1/conversations",
                                     params={"search": "train"}).json()["data"]] == [other]
    assert api.get("/v1/conversations", params={"search": "100%_"}).json()["data"] == []
    bad = api.post("/v1/conversations", json={"messages": [{"role": "tool", "content": "x"}]})
    assert bad.status_code == 400
