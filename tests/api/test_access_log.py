"""The access log of `starchart serve`: the web page's timed re-reads (marked
``X-Starchart-Poll: 1``) are DEBUG lines, every other request an INFO line."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx

from starchart.settings import Settings
from starchart.store import Store

from tests.e2e.test_store_durability import ServeProcess

POLL = {"X-Starchart-Poll": "1"}


@contextmanager
def serving(home: Path, level: str) -> Iterator[ServeProcess]:
    home.mkdir()
    server = ServeProcess(home, "--load-on-demand", "--log-level", level).start()
    try:
        yield server
    finally:
        server.stop()


def access_lines(server: ServeProcess) -> list[tuple[str, str, int]]:
    """(level, "METHOD PATH", status) of each access-log line, in order."""
    log = (server.home / "server.log").read_text()
    return [(level, request, int(status)) for level, request, status in re.findall(
        r'^(\w+): +127\.0\.0\.1:\d+ - "(\w+ \S+) HTTP/1\.1" (\d+)', log, re.MULTILINE)]


def test_polls_are_quiet_at_info_and_everything_else_logs(tmp_path: Path) -> None:
    with serving(tmp_path / "home", "info") as server, httpx.Client(
            base_url=server.url, timeout=30) as client:
        assert client.get("/v1/models").status_code == 200  # the page's first read
        assert client.get("/v1/models", headers=POLL).status_code == 200
        assert client.get("/v1/stats", headers=POLL).status_code == 200
        # The header quiets nothing but a successful read of a polled path.
        assert client.get("/v1/conversations", headers=POLL).status_code == 200
        assert client.get("/v1/models/nope", headers=POLL).status_code == 404
        assert client.get("/v1/models", headers={"X-Starchart-Poll": "0"}).status_code == 200
        with closing(Store.open(Settings(home=server.home))) as store:
            key = store.keys.create("page")[1]
        assert client.get("/v1/models", headers=POLL).status_code == 401  # refused: logged
        auth = {"Authorization": f"Bearer {key}"}
        assert client.get("/v1/models", headers={**POLL, **auth}).status_code == 200
        assert client.get("/v1/stats", headers=auth).status_code == 200
    lines = [line for line in access_lines(server) if line[1] != "GET /ready"]
    assert lines == [("INFO", "GET /v1/models", 200),
                     ("INFO", "GET /v1/conversations", 200),
                     ("INFO", "GET /v1/models/nope", 404),
                     ("INFO", "GET /v1/models", 200),
                     ("INFO", "GET /v1/models", 401),
                     ("INFO", "GET /v1/stats", 200)], lines


def test_polls_are_debug_lines_at_debug(tmp_path: Path) -> None:
    with serving(tmp_path / "home", "debug") as server, httpx.Client(
            base_url=server.url, timeout=30) as client:
        client.get("/v1/models")
        client.get("/v1/models", headers=POLL)
        client.get("/v1/stats", headers=POLL)
    lines = [line for line in access_lines(server) if line[1] != "GET /ready"]
    assert lines == [("INFO", "GET /v1/models", 200), ("DEBUG", "GET /v1/models", 200),
                     ("DEBUG", "GET /v1/stats", 200)], lines


def test_the_relays_upstream_requests_and_probes_are_debug_lines(tmp_path: Path) -> None:
    """httpx logs every request it sends at INFO: a front relaying to an upstream wrote
    a line per relayed request and per health probe (every 5 s, for ever)."""
    (tmp_path / "up").mkdir()
    upstream = ServeProcess(tmp_path / "up").start()
    try:
        for level, shown in (("info", False), ("debug", True)):
            home = tmp_path / level
            home.mkdir()
            front = ServeProcess(home, "--load-on-demand", "--log-level", level,
                                 "--upstream", f"up={upstream.url}",
                                 "--upstream-model", "up=smollm2-135m-instruct",
                                 "--upstream-health-interval", "0.2").start()
            try:
                answer = httpx.post(front.url + "/v1/chat/completions", timeout=60, json={
                    "model": "up", "max_tokens": 2,
                    "messages": [{"role": "user", "content": "Hi"}]})
                assert answer.status_code == 200, answer.text
                time.sleep(1)  # several probes
            finally:
                front.stop()
            log = (home / "server.log").read_text()
            assert ("HTTP Request: POST" in log) is shown, log[-2000:]
            assert ("HTTP Request: GET" in log) is shown, log[-2000:]
    finally:
        upstream.stop()
