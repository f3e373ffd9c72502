"""Two `starchart serve` processes on one PostgreSQL: one store, one lock per conversation."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import closing

import httpx
import pytest

from starchart.settings import Settings
from starchart.store import Store

from tests.e2e.test_store_durability import ServeProcess, turn
from tests.postgres import PostgresServer, postgres  # noqa: F401 - the session's server
from tests.replicas.replicas import two_replicas


@pytest.fixture(scope="module")
def replicas(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
             ) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    """Shared by this module's tests, in order: the keys test adds a key, the last kills A."""
    with two_replicas(postgres.new_database(), tmp_path_factory.mktemp("replicas")) as pair:
        yield pair


def _messages(url: str, conv_id: str, headers: dict[str, str] | None = None) -> list[dict]:
    response = httpx.get(f"{url}/v1/conversations/{conv_id}", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def test_a_conversation_written_through_a_is_read_and_continued_through_b(
        replicas: tuple[ServeProcess, ServeProcess]) -> None:
    a, b = replicas
    conv = httpx.post(a.url + "/v1/conversations", json={"system_prompt": ""}).json()
    first = turn(a.url, conv["id"], "What is the capital of France?")
    assert "Paris" in first["message"]["content"]
    assert _messages(b.url, conv["id"]) == _messages(a.url, conv["id"])
    second = turn(b.url, conv["id"], "And of Italy?")
    stored = _messages(a.url, conv["id"])
    assert [m["role"] for m in stored] == ["user", "assistant"] * 2
    assert stored[3]["content"] == second["message"]["content"]
    # B answered with A's turn in the prompt.
    assert second["message"]["usage"]["prompt_tokens"] > first["message"]["usage"]["prompt_tokens"]


def test_two_turns_at_once_through_a_and_b_are_serialised(
        replicas: tuple[ServeProcess, ServeProcess]) -> None:
    a, b = replicas
    conv = httpx.post(a.url + "/v1/conversations", json={"system_prompt": ""}).json()
    start = threading.Barrier(2)
    results: dict[str, dict] = {}

    def post(server: ServeProcess, name: str) -> None:
        start.wait()
        results[name] = turn(server.url, conv["id"], f"Say the word {name}.",
                             max_tokens=40, ignore_eos=True)

    threads = [threading.Thread(target=post, args=(a, "apple")),
               threading.Thread(target=post, args=(b, "banana"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {"apple", "banana"}  # both 200 (turn() asserts it)
    stored = _messages(a.url, conv["id"])
    assert [m["role"] for m in stored] == ["user", "assistant"] * 2
    assert all(not m["incomplete"] for m in stored)
    # Whichever went second saw the whole first turn: its prompt is longer.
    by_id = {r["message"]["id"]: r for r in results.values()}
    first, second = by_id[stored[1]["id"]], by_id[stored[3]["id"]]
    assert second["message"]["usage"]["prompt_tokens"] > \
        first["message"]["usage"]["prompt_tokens"] + 40


def _store(server: ServeProcess) -> Store:
    """The shared store, opened the way `starchart keys --database-url URL` opens it."""
    return Store.open(Settings(home=server.home, database_url=server.args[1]))


def _new_key(server: ServeProcess) -> str:
    with closing(_store(server)) as store:
        return store.keys.create("test")[1]


def test_keys_made_for_the_shared_store_work_on_both_replicas(
        replicas: tuple[ServeProcess, ServeProcess]) -> None:
    a, b = replicas
    for r in (a, b):
        assert httpx.get(r.url + "/v1/models").status_code == 200  # no keys yet: open
    with closing(_store(a)) as store:
        key, secret = store.keys.create("shared")
    auth = {"Authorization": f"Bearer {secret}"}
    for r in (a, b):
        assert httpx.get(r.url + "/v1/models").status_code == 401
        assert httpx.get(r.url + "/v1/models", headers=auth).status_code == 200
    # A conversation made with the key through A belongs to it through B too.
    conv = httpx.post(a.url + "/v1/conversations", headers=auth, json={}).json()
    assert httpx.get(f"{b.url}/v1/conversations/{conv['id']}",
                     headers=auth).status_code == 200
    with closing(_store(b)) as store:
        store.keys.revoke(key.id)
    for r in (a, b):
        assert httpx.get(r.url + "/v1/models", headers=auth).status_code == 401


def test_a_replica_killed_mid_reply_frees_the_conversation_and_keeps_the_partial_reply(
        replicas: tuple[ServeProcess, ServeProcess]) -> None:
    a, b = replicas
    auth = {"Authorization": f"Bearer {_new_key(a)}"}  # whether or not keys exist by now
    conv = httpx.post(a.url + "/v1/conversations", headers=auth,
                      json={"system_prompt": ""}).json()
    body = {"content": "Tell me a very long story.", "ignore_eos": True, "max_tokens": 900}
    received = ""
    started = time.monotonic()
    with httpx.stream("POST", f"{a.url}/v1/conversations/{conv['id']}/messages",
                      json=body, headers=auth, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if chunk["choices"]:
                    received += chunk["choices"][0]["delta"].get("content", "")
            if time.monotonic() - started > 1.5 and len(received) > 40:
                a.kill()  # holding the conversation's lock
                break
    assert a.proc is not None and a.proc.returncode == -signal.SIGKILL
    stored = _messages(b.url, conv["id"], auth)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    partial = stored[1]
    assert partial["incomplete"] is True and partial["content"]
    shorter, longer = sorted((partial["content"], received), key=len)
    assert longer.startswith(shorter)
    # PostgreSQL dropped the dead replica's lock with its connection: B goes on at once.
    after = httpx.post(f"{b.url}/v1/conversations/{conv['id']}/messages", headers=auth,
                       timeout=120, json={"content": "What is the capital of France?",
                                          "stream": False, "max_tokens": 16})
    assert after.status_code == 200 and after.json()["message"]["incomplete"] is False
    assert [m["role"] for m in _messages(b.url, conv["id"], auth)] == ["user", "assistant"] * 2

