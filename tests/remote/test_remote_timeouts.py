"""Timeouts against a scripted upstream on loopback that goes quiet.

The upstream speaks just enough HTTP: it lists a model, and answers a chat
request either not at all ("silent"), with one streamed event and then
silence ("stall"), so the first-token and idle timeouts can be seen to fire,
or with a whole answer up to [DONE] and then a body that never ends ("linger").
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from starchart.api.app import create_app
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port

CHUNK = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "quiet",
         "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]}


class QuietUpstream(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


class _Handler(socketserver.StreamRequestHandler):
    server: QuietUpstream

    def handle(self) -> None:
        request_line = self.rfile.readline().decode()
        length = 0
        while (line := self.rfile.readline().decode().strip()):
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        self.rfile.read(length)
        if request_line.startswith("GET"):
            body = json.dumps({"object": "list", "data": [{"id": "quiet"}]}).encode()
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
                             + body)
            return
        if self.server.mode in ("stall", "linger"):
            event = f"data: {json.dumps(CHUNK)}\n\n".encode()
            if self.server.mode == "linger":  # the whole answer, but the body never ends
                event += b"data: [DONE]\n\n"
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n"
                             + b"%x\r\n" % len(event) + event + b"\r\n")
            self.wfile.flush()
        self.server.release.wait(30)  # then silence


@pytest.fixture
def quiet_front(request: pytest.FixtureRequest, tmp_path: Path, engine: LlamaCppEngine
                ) -> Iterator[LiveServer]:
    upstream = QuietUpstream(request.param)
    settings = Settings(home=tmp_path, upstream=[f"quiet={upstream.url}"],
                        upstream_first_token_timeout=1, upstream_idle_timeout=1)
    try:
        with LiveServer(create_app(settings, engines=[engine]), free_port()) as server:
            yield server
    finally:
        upstream.close()


BODY = {"model": "quiet", "messages": [{"role": "user", "content": "hi"}]}


def streamed(server: LiveServer, within: float) -> list[str]:
    """The data of each SSE event of a streamed chat answer, which must end within seconds."""
    started = time.monotonic()
    with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=30,
                      json={**BODY, "stream": True}) as response:
        assert response.status_code == 200
        frames = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert time.monotonic() - started < within
    return frames


@pytest.mark.parametrize("quiet_front", ["silent"], indirect=True)
def test_no_first_token_in_time_is_a_504(quiet_front: LiveServer) -> None:
    for stream in (False, True):
        started = time.monotonic()
        response = httpx.post(quiet_front.url + "/v1/chat/completions", timeout=30,
                              json={**BODY, "stream": stream})
        assert response.status_code == 504, response.text
        assert response.json()["error"]["code"] == "upstream_timeout"
        assert time.monotonic() - started < 10


@pytest.mark.parametrize("quiet_front", ["stall"], indirect=True)
def test_a_stream_gone_quiet_ends_with_an_error_event_before_done(
        quiet_front: LiveServer) -> None:
    frames = streamed(quiet_front, within=10)
    assert json.loads(frames[0])["choices"][0]["delta"]["content"] == "Hello"
    assert json.loads(frames[0])["model"] == "quiet"
    assert json.loads(frames[1])["error"]["code"] == "upstream_timeout"
    assert frames[2:] == ["[DONE]"]


@pytest.mark.parametrize("quiet_front", ["stall"], indirect=True)
def test_a_stored_turn_whose_upstream_goes_quiet_keeps_its_text_marked_incomplete(
        quiet_front: LiveServer) -> None:
    conv = httpx.post(quiet_front.url + "/v1/conversations",
                      json={"system_prompt": "", "model": "quiet"}).json()
    posted = httpx.post(f"{quiet_front.url}/v1/conversations/{conv['id']}/messages",
                        timeout=30, json={"content": "hi", "stream": False})
    assert posted.status_code == 504, posted.text  # the idle timeout, in OpenAI's shape
    assert posted.json()["error"]["code"] == "upstream_timeout"
    stored = httpx.get(f"{quiet_front.url}/v1/conversations/{conv['id']}").json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["content"] == "Hello" and stored[1]["incomplete"] is True


@pytest.mark.parametrize("quiet_front", ["linger"], indirect=True)
def test_a_body_that_lingers_after_done_does_not_hold_the_clients_done(
        quiet_front: LiveServer) -> None:
    # The relay reads an upstream's body to its end after [DONE] (so the connection
    # can be reused), but only briefly: the client's answer is complete and ends.
    frames = streamed(quiet_front, within=3)
    assert json.loads(frames[0])["choices"][0]["delta"]["content"] == "Hello"
    assert frames[1:] == ["[DONE]"]
