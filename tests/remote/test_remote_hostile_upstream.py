"""The relay against upstream bodies no good server sends: a raw HTTP/1.1 upstream on
loopback (asyncio, chunked transfer) writes the bytes each test gives it after the
response head, and the real front relays them to a real client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from starchart.engines import remote

from tests.conftest import LiveServer
from tests.remote.raw_upstream import BREAK, CHUNK, FIRST, Body, RawUpstream, relay_front


@pytest.fixture(scope="module")
def upstream() -> Iterator[RawUpstream]:
    with RawUpstream() as raw:
        yield raw


@pytest.fixture(scope="module")
def front(upstream: RawUpstream, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[LiveServer]:
    with relay_front(tmp_path_factory.mktemp("home"), f"raw={upstream.url}",
                     upstream_first_token_timeout=30, upstream_idle_timeout=30) as server:
        yield server


def relayed(front: LiveServer) -> tuple[list[str], float]:
    """The data of each event the client gets, and how long the stream took."""
    started = time.monotonic()
    with httpx.stream("POST", front.url + "/v1/chat/completions", timeout=60,
                      json={"model": "raw", "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]}) as response:
        assert response.status_code == 200, response.read()
        frames = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    return frames, time.monotonic() - started


def _pieces(*pieces: bytes) -> Body:
    return lambda i: pieces[i] if i < len(pieces) else None


def _endless(first: bytes, filler: bytes, seconds: float = 25.0) -> Body:
    deadline: list[float] = []

    def body(i: int) -> bytes | None:
        if i == 0:
            deadline.append(time.monotonic() + seconds)
            return first
        return filler if time.monotonic() < deadline[0] else None

    return body


@pytest.mark.parametrize("what, filler", [
    ("one line that never ends", b"x" * 65536),
    ("data lines and never the blank line that ends the event", b"data: x\n" * 8192),
])
def test_an_event_that_never_ends_is_cut_off_at_a_size_not_the_idle_timeout(
        upstream: RawUpstream, front: LiveServer, what: str, filler: bytes) -> None:
    upstream.body = _endless(FIRST + b"data: ", filler)
    frames, took = relayed(front)
    assert frames[0].startswith("{"), (frames[0][:200], len(frames))
    assert json.loads(frames[0])["choices"][0]["delta"]["content"] == "Hello"
    error = json.loads(frames[1])["error"]
    assert error["code"] == "upstream_error" and "larger than" in error["message"], error
    assert frames[2:] == ["[DONE]"]
    assert took < 20, f"{what}: {took:.1f} s"  # not the 30 s idle timeout


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_split_across_chunks_is_relayed_whole(
        upstream: RawUpstream, front: LiveServer, newline: bytes) -> None:
    second = {**CHUNK, "choices": [{"index": 0, "delta": {"content": "é ☕"},
                                    "finish_reason": "stop"}]}
    body = (FIRST + f"data: {json.dumps(second, ensure_ascii=False)}\n\n".encode()
            + b": ping\n\ndata: [DONE]\n\n").replace(b"\n", newline)
    upstream.body = _pieces(*(body[i:i + 7] for i in range(0, len(body), 7)))
    frames, _ = relayed(front)
    assert [json.loads(f)["choices"][0]["delta"]["content"] for f in frames[:-1]] == [
        "Hello", "é ☕"]
    assert frames[-1] == "[DONE]"


def test_binary_garbage_is_relayed_as_text_and_the_stream_still_ends(
        upstream: RawUpstream, front: LiveServer) -> None:
    upstream.body = _pieces(FIRST, b"data: \xff\xfe\x00garbage\x80\n\n", b"\x00\xff\n\n",
                            b"data: [DONE]\n\n")
    frames, _ = relayed(front)
    assert frames[1] == "\ufffd\ufffd\x00garbage\ufffd" and frames[-1] == "[DONE]", frames


def test_an_error_event_then_no_done(upstream: RawUpstream, front: LiveServer) -> None:
    upstream.body = _pieces(FIRST, b'data: {"error": {"message": "out of memory"}}\n\n')
    frames, _ = relayed(front)
    assert json.loads(frames[1])["error"]["message"] == "out of memory"
    assert json.loads(frames[2])["error"]["code"] == "upstream_error"  # ended before [DONE]
    assert frames[3:] == ["[DONE]"]


def test_an_event_in_several_data_lines_reaches_the_client_whole(
        upstream: RawUpstream, front: LiveServer) -> None:
    # Legal SSE (the data lines of one event are joined with LF): pretty-printed JSON.
    pretty = json.dumps(CHUNK, indent=1).encode()
    upstream.body = _pieces(b"".join(b"data: " + line + b"\n" for line in pretty.split(b"\n"))
                            + b"\ndata: [DONE]\n\n")
    with httpx.stream("POST", front.url + "/v1/chat/completions", timeout=60,
                      json={"model": "raw", "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]}) as response:
        body = response.read().decode()
    # Read as an SSE client does: the data lines of each event, joined with LF.
    events = [("\n".join(line[6:] for line in block.split("\n") if line.startswith("data: ")))
              for block in body.split("\n\n") if block.strip()]
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "Hello", body
    assert events[1:] == ["[DONE]"]


@pytest.mark.parametrize("event", [
    b"data: not json\n\n",
    b'data: {"error": "out of memory", "error_type": "generation"}\n\n',  # TGI's shape
    b"data: [1, 2]\n\n",
    b'data: {"choices": ["x"]}\n\n',
    b'data: {"choices": [{"delta": "x"}]}\n\n',
    b'data: {"choices": [], "usage": {"completion_tokens": "many"}}\n\n',
], ids=["not-json", "string-error", "not-an-object", "choice-not-an-object",
        "delta-not-an-object", "usage-not-a-number"])
def test_a_stored_turn_on_an_event_it_cannot_read_is_a_bad_gateway_not_a_500(
        upstream: RawUpstream, front: LiveServer, event: bytes) -> None:
    upstream.body = _pieces(FIRST, event, b"data: [DONE]\n\n")
    conv = httpx.post(front.url + "/v1/conversations",
                      json={"system_prompt": "", "model": "raw"}).json()
    posted = httpx.post(f"{front.url}/v1/conversations/{conv['id']}/messages", timeout=30,
                        json={"content": "hi", "stream": False})
    assert posted.status_code == 502, posted.text
    assert posted.json()["error"]["code"] == "upstream_error"
    with httpx.stream("POST", f"{front.url}/v1/conversations/{conv['id']}/messages",
                      timeout=30, json={"content": "hi", "stream": True}) as response:
        body = response.read().decode()
    assert "upstream_error" in body and "internal_error" not in body, body


@pytest.mark.parametrize("body", [b"", b": only a comment\n\n", b'{"detail": "not a stream"}'],
                         ids=["empty", "no-event", "json"])
def test_a_stream_that_ends_before_its_first_event_is_a_502_status(
        upstream: RawUpstream, front: LiveServer, body: bytes) -> None:
    # Nothing reached the client yet: the failure is still an HTTP status, as for an
    # upstream that fails before its first event in any other way.
    upstream.body = _pieces(body)
    response = httpx.post(front.url + "/v1/chat/completions", timeout=30,
                          json={"model": "raw", "stream": True,
                                "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_error"


def _answer_of(size: int) -> bytes:
    """A whole chat completion of exactly ``size`` bytes (its content pads it out)."""
    answer = {"id": "x", "object": "chat.completion", "created": 0, "model": "raw",
              "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": ""}}]}
    empty = len(json.dumps(answer).encode())
    answer["choices"][0]["message"]["content"] = "x" * (size - empty)  # type: ignore[index]
    body = json.dumps(answer).encode()
    assert len(body) == size
    return body


@pytest.mark.parametrize("over", [0, 1, 2**20], ids=["at-the-limit", "one-byte-over",
                                                     "a-mib-over"])
def test_a_whole_answer_past_the_body_limit_is_a_502_naming_the_limit(
        upstream: RawUpstream, front: LiveServer, monkeypatch: pytest.MonkeyPatch,
        over: int) -> None:
    # Read whole, an unbounded answer is kept in memory for as long as the upstream
    # sends it. The limit made 1 MiB here, to test it without sending 64 MiB.
    monkeypatch.setattr(remote, "MAX_BODY_BYTES", 2**20)
    body = _answer_of(2**20 + over)
    upstream.body = _pieces(*(body[i:i + 65536] for i in range(0, len(body), 65536)))
    response = httpx.post(front.url + "/v1/chat/completions", timeout=30,
                          json={"model": "raw",
                                "messages": [{"role": "user", "content": "hi"}]})
    if not over:
        assert response.status_code == 200, response.text[:500]
        assert len(response.json()["choices"][0]["message"]["content"]) > 2**19
        return
    assert response.status_code == 502, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == "upstream_error", error
    assert upstream.url in error["message"] and "larger than 1 MiB" in error["message"], error


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_an_error_body_past_its_limit_is_a_502_not_kept_in_memory(
        upstream: RawUpstream, front: LiveServer, monkeypatch: pytest.MonkeyPatch,
        stream: bool) -> None:
    # Only an error's message is passed on: its body is read up to ERROR_BODY_BYTES,
    # made 64 KiB here (the upstream sends 1 MiB and would go on).
    monkeypatch.setattr(remote, "ERROR_BODY_BYTES", 2**16)
    monkeypatch.setattr(upstream, "status", b"400 Bad Request")
    upstream.body = lambda i: b"x" * 65536 if i < 16 else None
    response = httpx.post(front.url + "/v1/chat/completions", timeout=30,
                          json={"model": "raw", "stream": stream,
                                "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 502, response.text[:500]
    error = response.json()["error"]
    assert upstream.url in error["message"] and "400" in error["message"], error
    assert "larger than 64 KiB" in error["message"], error


def test_an_error_body_within_its_limit_is_passed_on(
        upstream: RawUpstream, front: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream, "status", b"400 Bad Request")
    message = json.dumps({"error": {"message": "prompt too long", "param": "messages"}})
    upstream.body = _pieces(message.encode())
    response = httpx.post(front.url + "/v1/chat/completions", timeout=30,
                          json={"model": "raw", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400, response.text[:500]
    assert response.json()["error"]["message"] == "prompt too long"


def test_bytes_short_of_an_event_keep_a_stream_from_the_idle_timeout(
        upstream: RawUpstream, tmp_path: Path) -> None:
    # Keep-alive comments (": ping"), or an event arriving slowly in pieces, are not
    # silence: the idle timeout (1 s here) counts from the last bytes, not the last event.
    last = f"data: {json.dumps({**CHUNK, 'choices': [{'index': 0, 'delta': {'content': ' world'}, 'finish_reason': 'stop'}]})}\n\n".encode()  # noqa: E501
    pieces = [FIRST, *([b": ping\n\n"] * 5), last[:20], last[20:], b"data: [DONE]\n\n"]

    def paced(i: int) -> bytes | None:
        if i >= len(pieces):
            return None
        if i:
            time.sleep(0.4)  # 2.8 s in all, never 1 s without a byte
        return pieces[i]

    upstream.body = paced
    with relay_front(tmp_path, f"raw={upstream.url}", upstream_first_token_timeout=30,
                     upstream_idle_timeout=1) as front:
        frames, _ = relayed(front)
    assert frames[-1] == "[DONE]", frames
    assert all("error" not in frame for frame in frames), frames
    texts = [json.loads(f)["choices"][0]["delta"].get("content") for f in frames[:-1]]
    assert texts == ["Hello", " world"], frames


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_an_error_body_that_breaks_off_is_a_502_not_a_500(
        upstream: RawUpstream, front: LiveServer, monkeypatch: pytest.MonkeyPatch,
        stream: bool) -> None:
    monkeypatch.setattr(upstream, "status", b"400 Bad Request")
    upstream.body = _pieces(b'{"error": {"message": "prompt', BREAK)
    response = httpx.post(front.url + "/v1/chat/completions", timeout=30,
                          json={"model": "raw", "stream": stream,
                                "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 502, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == "upstream_error" and upstream.url in error["message"], error


def test_the_first_token_timeout_bounds_the_head_and_the_first_event_together(
        upstream: RawUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 0.8 s to the answer's head, 0.8 more to its first event: each within the 1 s
    # first-token timeout, together over it. The timeout is the client's wait for a
    # first token, not a budget for each half.
    monkeypatch.setattr(upstream, "head_delay", 0.8)

    def late(i: int) -> bytes | None:
        if i == 0:
            time.sleep(0.8)
            return FIRST + b"data: [DONE]\n\n"
        return None

    upstream.body = late
    with relay_front(tmp_path, f"raw={upstream.url}", upstream_first_token_timeout=1,
                     upstream_idle_timeout=30) as front:
        started = time.monotonic()
        response = httpx.post(front.url + "/v1/chat/completions", timeout=30,
                              json={"model": "raw", "stream": True,
                                    "messages": [{"role": "user", "content": "hi"}]})
        waited = time.monotonic() - started
    assert response.status_code == 504, response.text[:500]
    assert "1 s" in response.json()["error"]["message"], response.text
    assert waited < 1.5, waited
