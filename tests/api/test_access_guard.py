"""Keys, Host and Origin checks, CORS and limits, on a live server with real keys."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass

import httpx
import openai
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from starchart.api.app import create_app
from starchart.api.auth import AccessGuard, is_public
from starchart.settings import Settings
from starchart.store import Store

from tests.conftest import LiveServer, free_port


@dataclass
class Keys:
    a: str
    b: str
    revoked: str


@pytest.fixture
def keys(settings: Settings) -> Keys:
    with closing(Store.open(settings)) as store:
        a = store.keys.create("a")[1]
        b = store.keys.create("b")[1]
        old, revoked = store.keys.create("old")
        store.keys.revoke(old.id)
    return Keys(a, b, revoked)


@pytest.fixture
def server(keys: Keys, live_server: LiveServer) -> LiveServer:
    return live_server  # keys were created before the server started


def client(server: LiveServer, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def test_missing_wrong_and_revoked_keys_get_the_same_openai_401(
        server: LiveServer, keys: Keys) -> None:
    attempts = [
        {}, {"Authorization": "Bearer sk-star-wrong"}, {"Authorization": f"Bearer {keys.revoked}"},
        {"Authorization": keys.a}, {"Authorization": f"Basic {keys.a}"},
        {"Authorization": "Bearer"},
    ]
    bodies = []
    for headers in attempts:
        response = httpx.get(server.url + "/v1/models", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        bodies.append(response.json())
    assert all(body == bodies[0] for body in bodies)
    error = bodies[0]["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert "Authorization: Bearer" in error["message"]
    for key in (keys.a, keys.b):
        assert httpx.get(server.url + "/v1/models",
                         headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_the_openai_client_sends_the_key(server: LiveServer, keys: Keys) -> None:
    good = openai.OpenAI(base_url=server.url + "/v1", api_key=keys.a)
    reply = good.chat.completions.create(
        model="smollm2-135m-instruct", max_tokens=4,
        messages=[{"role": "system", "content": ""}, {"role": "user", "content": "hi"}])
    assert reply.usage.completion_tokens > 0
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-star-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.models.list()
    assert caught.value.code == "invalid_api_key"


def test_health_ready_and_the_web_page_need_no_key(server: LiveServer) -> None:
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/ready").status_code == 200
    for path in ("/", "/assets/app.js", "/favicon.ico"):
        assert httpx.get(server.url + path).status_code != 401  # 404 until the page exists


def test_a_key_cannot_see_or_touch_another_keys_conversations(
        server: LiveServer, keys: Keys) -> None:
    with client(server, keys.a) as a, client(server, keys.b) as b:
        conv = a.post("/v1/conversations", json={"title": "a's"}).json()
        url = f"/v1/conversations/{conv['id']}"
        missing = b.get("/v1/conversations/conv_doesnotexist").json()

        def same_as_missing(response: httpx.Response) -> None:
            assert response.status_code == 404
            assert response.json() == json.loads(
                json.dumps(missing).replace("conv_doesnotexist", conv["id"]))

        assert b.get("/v1/conversations").json()["data"] == []
        same_as_missing(b.get(url))
        same_as_missing(b.patch(url, json={"title": "mine now"}))
        same_as_missing(b.get(url + "/export"))
        same_as_missing(b.post(url + "/messages", json={"content": "hi", "max_tokens": 2}))
        same_as_missing(b.delete(url))
        with connect(ws(server, conv["id"]),
                     additional_headers={"Authorization": f"Bearer {keys.b}"}) as sock:
            assert json.loads(sock.recv(timeout=10))["error"]["code"] == "not_found"
        # Untouched, and still a's.
        mine = a.get(url).json()
        assert mine["title"] == "a's" and mine["messages"] == []
        assert [c["id"] for c in a.get("/v1/conversations").json()["data"]] == [conv["id"]]
        assert a.delete(url).status_code == 200


def ws(server: LiveServer, conv_id: str) -> str:
    return server.url.replace("http://", "ws://") + f"/v1/conversations/{conv_id}/ws"


def test_websocket_needs_a_key_by_header_or_subprotocol(server: LiveServer, keys: Keys) -> None:
    with client(server, keys.a) as a:
        conv_id = a.post("/v1/conversations").json()["id"]
    with pytest.raises(InvalidStatus) as refused:
        connect(ws(server, conv_id)).close()
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"]["code"] == "invalid_api_key"
    with connect(ws(server, conv_id),
                 additional_headers={"Authorization": f"Bearer {keys.a}"}) as sock:
        sock.send(json.dumps({"content": "hi", "max_tokens": 2}))
        while json.loads(sock.recv(timeout=60))["type"] == "delta":
            pass
    # A browser cannot set headers on a WebSocket: the key rides as a subprotocol.
    with connect(ws(server, conv_id), subprotocols=["starchart", f"bearer.{keys.a}"]) as sock:
        assert sock.subprotocol == "starchart"
    with pytest.raises(InvalidStatus):
        connect(ws(server, conv_id), subprotocols=["starchart", f"bearer.{keys.revoked}"])


def test_dns_rebinding_hosts_are_refused(live_server: LiveServer) -> None:
    for host in ("evil.example", "evil.example:80", "localhost.evil.example", "10.1.2.3"):
        response = httpx.get(live_server.url + "/health", headers={"Host": host})
        assert response.status_code == 400, host
        assert response.json()["error"]["code"] == "invalid_host"
        assert response.json()["error"]["param"] == "Host"
    for host in (f"127.0.0.1:{live_server.port}", f"localhost:{live_server.port}",
                 "[::1]", "LOCALHOST."):
        assert httpx.get(live_server.url + "/health", headers={"Host": host}).status_code == 200


def test_allowed_hosts_and_wildcard_binds(tmp_path) -> None:
    keys = Store.open(Settings(home=tmp_path)).keys

    def guard(**fields: object) -> AccessGuard:
        return AccessGuard(lambda *a: None, Settings(home=tmp_path, **fields), keys)

    assert guard(allowed_hosts="chat.lan, box").host_allowed("chat.lan:8000")
    assert not guard(allowed_hosts="chat.lan").host_allowed("other.lan")
    assert guard(allowed_hosts="*").host_allowed("anything.example")
    wildcard = guard(host="0.0.0.0")
    assert wildcard.host_allowed("192.168.1.20:8000")  # any address of this machine
    assert not wildcard.host_allowed("evil.example")  # but never a name it was not given
    assert guard(host="192.168.1.20").host_allowed("192.168.1.20:8000")
    assert not guard(host="192.168.1.20").host_allowed("192.168.1.21")


def test_websocket_from_a_foreign_origin_is_refused(live_server: LiveServer) -> None:
    conv_id = httpx.post(live_server.url + "/v1/conversations").json()["id"]
    with pytest.raises(InvalidStatus) as refused:
        connect(ws(live_server, conv_id), origin="http://evil.example").close()
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body)["error"]["param"] == "Origin"
    with pytest.raises(InvalidStatus):  # same host, other port: another origin
        connect(ws(live_server, conv_id), origin="http://127.0.0.1:1").close()
    with connect(ws(live_server, conv_id), origin=live_server.url):  # the server's own page
        pass


def test_cors_is_off_unless_origins_are_configured(settings: Settings, engine) -> None:
    preflight = {"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"}
    with LiveServer(create_app(settings, engines=[engine]), free_port()) as server:
        response = httpx.options(server.url + "/v1/chat/completions", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
        got = httpx.get(server.url + "/v1/models", headers={"Origin": preflight["Origin"]})
        assert "access-control-allow-origin" not in got.headers
    allowed = settings.model_copy(update={"cors_origins": "http://localhost:5173"})
    with LiveServer(create_app(allowed, engines=[engine]), free_port()) as server:
        response = httpx.options(server.url + "/v1/chat/completions", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "http://localhost:5173"
        other = httpx.options(server.url + "/v1/chat/completions",
                              headers={**preflight, "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        # The origin may also open WebSockets.
        conv_id = httpx.post(server.url + "/v1/conversations").json()["id"]
        with connect(ws(server, conv_id), origin="http://localhost:5173"):
            pass


def test_request_bodies_and_websocket_frames_have_a_size_limit(
        settings: Settings, engine) -> None:
    small = settings.model_copy(update={"max_body_bytes": 2048})
    with LiveServer(create_app(small, engines=[engine]), free_port()) as server:
        conv_id = httpx.post(server.url + "/v1/conversations").json()["id"]
        big = httpx.post(f"{server.url}/v1/conversations/{conv_id}/messages",
                         json={"content": "x" * 4000})
        assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
        with connect(ws(server, conv_id)) as sock:
            sock.send(json.dumps({"content": "x" * 4000}))
            frame = json.loads(sock.recv(timeout=10))
            assert frame["type"] == "error" and frame["error"]["code"] == "request_too_large"
        assert httpx.get(f"{server.url}/v1/conversations/{conv_id}").json()["messages"] == []


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def all_routes(routes: list, prefix: str = "") -> Iterator[tuple[str, object]]:
    """(full path, route) for every route, looking inside included routers
    (newer FastAPI keeps an included router as one entry)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from all_routes(included.routes, prefix + route.include_context.prefix)
        else:
            yield prefix + getattr(route, "path", ""), route


def test_every_route_needs_the_key_except_the_allow_list(
        settings: Settings, engine, keys: Keys) -> None:
    """Walks the app's own route table, so a route added later cannot slip through."""
    app = create_app(settings.model_copy(update={"allowed_hosts": "testserver"}),
                     engines=[engine])
    test = TestClient(app)
    checked_http = checked_ws = 0
    for template, route in all_routes(app.routes):
        path = _fill(template)
        if isinstance(route, APIWebSocketRoute | WebSocketRoute):
            with pytest.raises(WebSocketDenialResponse) as denied:
                with test.websocket_connect(path):
                    pass
            assert denied.value.status_code == 401, (template, denied.value.content)
            checked_ws += 1
        elif isinstance(route, APIRoute | Route):
            for method in sorted(route.methods - {"HEAD"}):
                status = test.request(method, path).status_code
                if is_public(template):
                    assert status != 401, (method, template)
                else:
                    assert status == 401, (method, template)
                    assert test.request(method, path, headers={
                        "Authorization": f"Bearer {keys.a}"}).status_code != 401
                checked_http += 1
        elif isinstance(route, Mount):
            status = test.get(path.rstrip("/") + "/x").status_code
            assert (status != 401) == is_public(path.rstrip("/") + "/x"), template
        else:
            raise AssertionError(f"a route of an unknown kind: {route!r}")
    assert checked_ws >= 1 and checked_http >= 14
