"""Auth: API keys never reach a log line or an error body, and a wrong key cannot be
told from a missing one by its timing."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from contextlib import closing

import httpx
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from starchart.settings import Settings
from starchart.store import Store

from tests.e2e.test_store_durability import ServeProcess


def test_keys_never_in_logs_or_error_bodies_and_wrong_vs_missing_timing(
        serve: Callable[..., ServeProcess], report: Callable[[str, str], None]) -> None:
    server = serve("--log-level", "debug")
    with closing(Store.open(Settings(home=server.home))) as store:
        good = store.keys.create("ci")[1]
        revoked_key, revoked = store.keys.create("old")[0], store.keys.create("older")[1]
        store.keys.revoke(revoked_key.id)
    wrong = good[:-4] + ("aaaa" if not good.endswith("aaaa") else "bbbb")
    presented = [good, wrong, revoked]
    bodies: list[str] = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for key in presented:
            auth = {"Authorization": f"Bearer {key}"}
            for method, path, body in (
                    ("POST", "/v1/chat/completions", {"messages": [{"role": "user",
                                                                    "content": "hi"}],
                                                      "max_tokens": 2}),
                    ("POST", "/v1/chat/completions", {"messages": "not a list"}),
                    ("POST", "/v1/completions", {"prompt": 5}),
                    ("GET", "/v1/conversations/conv_nope", None),
                    ("POST", "/v1/conversations", {"title": 5}),
                    ("GET", "/v1/nope", None)):
                response = client.request(method, path, json=body, headers=auth)
                bodies.append(response.text)
            bodies.append(client.post("/v1/chat/completions", content=b"{broken",
                                      headers=auth).text)
            try:
                with connect(server.url.replace("http", "ws") + "/v1/conversations/x/ws",
                             subprotocols=["starchart", f"bearer.{key}"]) as ws:
                    bodies.append(ws.recv(timeout=10))
            except InvalidStatus as exc:
                bodies.append(exc.response.body.decode() if exc.response.body else "")

        # Timing: a wrong key against a missing one, interleaved.
        ask = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        times: dict[str, list[float]] = {"wrong": [], "missing": []}
        for i in range(120):
            kind = "wrong" if i % 2 else "missing"
            headers = {"Authorization": f"Bearer {wrong}"} if kind == "wrong" else {}
            started = time.perf_counter()
            response = client.post("/v1/chat/completions", json=ask, headers=headers)
            times[kind].append(time.perf_counter() - started)
            assert response.status_code == 401
            bodies.append(response.text)
    server.stop()
    log = (server.home / "server.log").read_text()
    assert "401" in log  # the log was captured at all
    for key in presented:
        secret = key.split("-")[-1] if "-" in key else key
        for text, where in ((log, "the server log"), ("\n".join(bodies), "an error body")):
            found = next((text.index(n) for n in (key, secret[-16:]) if n in text), None)
            assert found is None, f"a key appears in {where}: " + repr(
                text[max(0, found - 400):found + 60].replace(secret[-16:], "<KEY>"))
    assert len({json.loads(b)["error"]["message"] for b in bodies[-120:]}) == 1
    wrong_ms = statistics.median(times["wrong"]) * 1000
    missing_ms = statistics.median(times["missing"]) * 1000
    spread = statistics.quantiles(times["missing"] + times["wrong"], n=4)
    noise_ms = (spread[2] - spread[0]) * 1000  # the interquartile range of both
    report("auth", f"no key in the server log (debug level) or {len(bodies)} error bodies;"
           f" 401 median wrong key {wrong_ms:.2f} ms vs missing {missing_ms:.2f} ms"
           f" (interquartile range {noise_ms:.2f} ms)")
    assert abs(wrong_ms - missing_ms) <= max(noise_ms, 0.5)
