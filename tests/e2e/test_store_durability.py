"""Nothing lost: `starchart serve` as a real process, restarted and SIGKILLed."""

from __future__ import annotations

import gc
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port


class ServeProcess:
    """`python -m starchart serve` on a free loopback port with its own data dir."""

    ready_timeout = 90.0  # seconds to /ready (a loaded machine may need more)

    def __init__(self, home: Path, *args: str) -> None:
        self.home = home
        self.args = args  # more `serve` flags (--database-url, --upstream, ...)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServeProcess:
        env = {**os.environ, "STARCHART_HOME": str(self.home)}
        # The child writes through its own copy of the descriptor: ours is closed at
        # once, however the server ends (stop, kill, a failed start).
        with open(self.home / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "starchart", "serve", "--port", str(self.port),
                 "--n-ctx", "1024", "--log-level", "warning", *self.args],
                env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.home / "server.log").read_text()
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("server did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServeProcess]:
    home = tmp_path / "home"
    home.mkdir()
    process = ServeProcess(home)
    yield process
    process.stop()


def turn(url: str, conv_id: str, content: str, **params: object) -> dict:
    response = httpx.post(f"{url}/v1/conversations/{conv_id}/messages", timeout=120,
                          json={"content": content, "stream": False, "temperature": 0,
                                "max_tokens": 24, **params})
    assert response.status_code == 200, response.text
    return response.json()


def test_conversations_survive_a_restart(server: ServeProcess) -> None:
    server.start()
    convs = []
    for title in ("one", "two"):
        conv = httpx.post(server.url + "/v1/conversations",
                          json={"title": title, "system_prompt": ""}).json()
        turn(server.url, conv["id"], "What is the capital of France?")
        turn(server.url, conv["id"], "And of Italy?")
        convs.append(httpx.get(f"{server.url}/v1/conversations/{conv['id']}").json())
    listed = httpx.get(server.url + "/v1/conversations").json()
    server.stop()

    server.start()
    assert httpx.get(server.url + "/v1/conversations").json() == listed
    for conv in convs:
        again = httpx.get(f"{server.url}/v1/conversations/{conv['id']}").json()
        assert again == conv
        assert [m["role"] for m in again["messages"]] == ["user", "assistant"] * 2
        assert "Paris" in again["messages"][1]["content"]


def test_a_server_killed_mid_reply_leaves_a_readable_partial_reply(
        server: ServeProcess) -> None:
    server.start()
    conv = httpx.post(server.url + "/v1/conversations", json={"system_prompt": ""}).json()
    first = turn(server.url, conv["id"], "What is the capital of France?")
    body = {"content": "Tell me a very long story.", "ignore_eos": True, "max_tokens": 900}
    received = ""
    started = time.monotonic()
    with httpx.stream("POST", f"{server.url}/v1/conversations/{conv['id']}/messages",
                      json=body, timeout=120) as response:
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            chunk = json.loads(line[6:])
            received += chunk["choices"][0]["delta"].get("content", "") if chunk[
                "choices"] else ""
            # Long enough for the periodic flush to have written some of it.
            if time.monotonic() - started > 1.5 and len(received) > 40:
                server.kill()
                break
    assert server.proc.returncode == -signal.SIGKILL

    database = server.home / "starchart.db"
    with sqlite3.connect(database) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    server.start()
    stored = httpx.get(f"{server.url}/v1/conversations/{conv['id']}").json()
    roles = [m["role"] for m in stored["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    done, partial = stored["messages"][1], stored["messages"][3]
    assert done["content"] == first["message"]["content"] and not done["incomplete"]
    assert stored["messages"][2]["content"] == body["content"]
    assert partial["incomplete"] is True and partial["finish_reason"] is None
    assert partial["usage"] is None and partial["params"]["ignore_eos"] is True
    assert partial["content"], "the flushed part of the reply is kept"
    # Both are the start of the same reply: what was stored and what was read.
    shorter, longer = sorted((partial["content"], received), key=len)
    assert longer.startswith(shorter)
    # The conversation carries on.
    after = turn(server.url, conv["id"], "What is the capital of France?")
    assert after["message"]["incomplete"] is False


def test_stopping_or_killing_a_server_leaves_no_log_file_to_the_garbage_collector(
        server: ServeProcess) -> None:
    """The log file this process opened for the child is closed, not dropped for the
    garbage collector to close (a ResourceWarning), however the server ends."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        server.start()
        server.stop()
        server.start()
        server.kill()
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
    assert (server.home / "server.log").stat().st_size, "the server still logs to it"
