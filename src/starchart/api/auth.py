"""Who may talk to the server: one pure ASGI middleware for HTTP and WebSocket.

Being the outermost layer around every route (rather than a dependency each
route must remember to declare), it covers routes added later automatically.
In order, for every request:

1. ``Host`` must be a name or address of this server: loopback names, the
   bound address (any IP literal when bound to a wildcard address) and the
   ``allowed_hosts`` setting. Anything else is a 400: a DNS-rebinding page
   (evil.example resolving to 127.0.0.1) sends its own name (the attack of
   Ollama's CVE-2024-28224).
2. A WebSocket handshake carrying an ``Origin`` must come from this server's
   own origin or one listed in ``cors_origins``: browsers let any page open a
   WebSocket anywhere, CORS does not apply to them.
3. Unless the path is public (``/health``, ``/ready``, the web page; ``/metrics``
   with the ``metrics_open`` setting), a valid
   API key is needed once any key exists: ``Authorization: Bearer KEY``, or,
   for a browser's WebSocket (which cannot set headers), the subprotocol
   ``bearer.KEY`` offered next to ``starchart``. Missing, wrong and revoked
   keys all get the same 401.

The key id (or ``None``) goes into ``scope["state"]["api_key_id"]``: routes
read it with ``key_id(request)`` to scope what a key may see.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from starchart.api.errors import error_response
from starchart.errors import BadRequest, StarchartError, Unauthorized
from starchart.settings import Settings
from starchart.store.keys import KeyCheck, KeyStore

PUBLIC_PATHS = frozenset({"/health", "/ready", "/", "/index.html"})
PUBLIC_PREFIXES = ("/assets/", "/favicon")
WS_SUBPROTOCOL = "starchart"
WS_KEY_PREFIX = "bearer."

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})


class OriginNotAllowed(StarchartError):
    status = 403
    type = "invalid_request_error"
    code = "origin_not_allowed"


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def key_id(conn: HTTPConnection) -> str | None:
    """The id of the API key the request came with (None when no keys exist)."""
    return getattr(conn.state, "api_key_id", None)


def split_setting(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_name(host_header: str) -> str:
    """``[::1]:8000`` -> ``::1``; ``Example.com.:80`` -> ``example.com``."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def unauthorized() -> Unauthorized:
    return Unauthorized(
        "missing or invalid API key: send 'Authorization: Bearer KEY' with a key from"
        " `starchart keys create`", param="Authorization")


class AccessGuard:
    def __init__(self, app: ASGIApp, settings: Settings, keys: KeyStore) -> None:
        self.app = app
        self.keys = KeyCheck(keys)
        extra = {host_name(h) for h in split_setting(settings.allowed_hosts)}
        self.any_host = "*" in extra
        self.hosts = _LOOPBACK_NAMES | extra | {host_name(settings.host)}
        self.any_ip = settings.host in _WILDCARD_BINDS
        self.origins = frozenset(o.rstrip("/") for o in split_setting(settings.cors_origins))
        self.metrics_open = settings.metrics_open

    def host_allowed(self, host_header: str | None) -> bool:
        if host_header is None:  # HTTP/1.0 without Host: no browser sends that
            return True
        name = host_name(host_header)
        return self.any_host or name in self.hosts or (self.any_ip and _is_ip(name))

    def origin_allowed(self, origin: str | None, host_header: str | None) -> bool:
        if origin is None:  # not a browser
            return True
        if origin.rstrip("/") in self.origins:
            return True
        netloc = urlsplit(origin).netloc.lower()
        return bool(netloc) and host_header is not None and netloc == host_header.lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or []}
        host = headers.get("host")
        if not self.host_allowed(host):
            await self._refuse(scope, receive, send, BadRequest(
                f"this server is not reachable as {host!r}: add the name to the"
                " allowed_hosts setting if that is intended", param="Host",
                code="invalid_host"))
            return
        if scope["type"] == "websocket" and not self.origin_allowed(headers.get("origin"), host):
            await self._refuse(scope, receive, send, OriginNotAllowed(
                f"WebSocket connections from {headers.get('origin')!r} are not allowed:"
                " add the origin to the cors_origins setting if that is intended",
                param="Origin"))
            return
        key_id = None
        if not (is_public(scope["path"]) or (self.metrics_open and scope["path"] == "/metrics")):
            access = await self.keys.check(_presented_key(headers))
            if not access.granted:
                await self._refuse(scope, receive, send, unauthorized())
                return
            key_id = access.key_id
        scope.setdefault("state", {})["api_key_id"] = key_id
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send,
                      error: StarchartError) -> None:
        response = error_response(error)
        if isinstance(error, Unauthorized):
            response.headers["WWW-Authenticate"] = "Bearer"
        if scope["type"] == "websocket" and "websocket.http.response" not in scope.get(
                "extensions", {}):
            await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})
            return
        await response(scope, receive, send)


def _presented_key(headers: dict[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for protocol in headers.get("sec-websocket-protocol", "").split(","):
        protocol = protocol.strip()
        if protocol.startswith(WS_KEY_PREFIX):
            return protocol[len(WS_KEY_PREFIX):]
    return None
