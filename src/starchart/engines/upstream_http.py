"""HTTP to upstreams: httpx's requests, responses and errors, over httpcore's
HTTP/1.1 connections, on asyncio's own streams.

Measured side by side against an upstream that answers at once (8 concurrent
streams, 2 cores), the relay's own CPU cost per request was mostly its HTTP
client's. Three layers of httpx's usual stack are left out for it:

- ``httpx.AsyncClient``: a request is built from a URL and headers made once
  per upstream, and the cookie jar is not consulted (the front serves every
  user: an upstream's cookie must not go out with another user's request).
  Upstreams are reached directly: the ``HTTP(S)_PROXY`` variables are not used
  for them (``SSL_CERT_FILE``/``SSL_CERT_DIR`` are, as httpx does).
- ``httpcore.AsyncConnectionPool``, for ``_Pool``: one origin, HTTP/1.1, the
  last connection given back taken first.
- anyio's socket streams, for asyncio transports and protocols (``_Stream``).
  What that stream does differently, and nothing else:

  - Writes are gathered and go out in one ``send`` when the answer is read (or
    past ``FLUSH_BYTES``): httpcore writes a request's head and body apart.
  - A write yields to the event loop only when the socket's buffer is full
    (anyio's takes a cancel scope and a yield on every write).
  - Whether an idle kept-alive connection was closed by the upstream is known
    from what the protocol has seen, without a ``poll()`` system call.
  - Reading stops (``pause_reading``) while ``READ_AHEAD_BYTES`` wait unread,
    so a slow client slows the upstream down instead of filling memory.

Measured in a loop of 8 requests at a time (``UpstreamClient`` alone, no
server): 430-525 µs of CPU per request with httpcore's pool, 217-239 µs with
``_Pool``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any, cast

import httpcore
import httpx

from starchart import __version__
from starchart.errors import BadRequest

log = logging.getLogger("starchart.upstream")

FLUSH_BYTES = 64 * 1024
READ_AHEAD_BYTES = 256 * 1024


class _Protocol(asyncio.Protocol):
    """One connection's received bytes and state, for the one reader httpcore has."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.ended = False  # the peer's end of stream, or the connection lost
        self.error: Exception | None = None
        self.paused = False
        self.can_write = True
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= READ_AHEAD_BYTES and not self.paused and self.transport:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.error = exc
        self.can_write = True  # a writer waiting for room finds the connection gone
        self._wake()

    def pause_writing(self) -> None:
        self.can_write = False

    def resume_writing(self) -> None:
        self.can_write = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_until(self, ready: Callable[[], bool], timeout: float | None) -> None:
        """Until ``ready()``, checked each time something happens to the connection;
        ``TimeoutError`` after ``timeout`` seconds (None: no limit)."""
        if ready():  # the usual case: no timer to set up
            return
        async with asyncio.timeout(timeout):
            while not ready():
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, protocol: _Protocol,
                 socket_transport: asyncio.Transport | None = None) -> None:
        self._transport = transport
        self._protocol = protocol
        # Under TLS, what TLS has encrypted waits in the socket's own transport.
        self._socket_transport = socket_transport or transport
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._flush()
        protocol = self._protocol
        try:
            await protocol.wait_until(lambda: bool(protocol.received) or protocol.ended, timeout)
        except TimeoutError:
            raise httpcore.ReadTimeout(f"nothing to read within {timeout:g} s") from None
        if protocol.received:
            data = bytes(protocol.received[:max_bytes])
            del protocol.received[:max_bytes]
            if protocol.paused and len(protocol.received) < READ_AHEAD_BYTES // 2:
                protocol.paused = False
                self._transport.resume_reading()
            return data
        if protocol.error is not None:
            raise httpcore.ReadError(str(protocol.error) or type(protocol.error).__name__)
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._protocol.ended or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._pending.append(buffer)
        self._pending_bytes += len(buffer)
        if self._pending_bytes < FLUSH_BYTES:
            return
        self._flush()
        protocol = self._protocol
        try:
            await protocol.wait_until(lambda: protocol.can_write, timeout)
        except TimeoutError:
            raise httpcore.WriteTimeout(f"the upstream took nothing for {timeout:g} s") from None
        if protocol.ended:
            raise httpcore.WriteError("the connection is closed")

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending, self._pending_bytes = self._pending, [], 0
            if not self._transport.is_closing():
                self._transport.write(b"".join(pending))

    async def aclose(self) -> None:
        self._pending.clear()
        if self._transport.get_write_buffer_size() or \
                self._socket_transport.get_write_buffer_size():
            # A request given up on before the upstream took it all: close() would
            # keep the socket and the bytes until a stuck upstream reads them.
            self._transport.abort()
        else:
            self._transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> _Stream:
        self._flush()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(self._transport, self._protocol, ssl_context,
                                                 server_hostname=server_hostname)
        except TimeoutError:
            self._transport.close()
            raise httpcore.ConnectTimeout(f"no TLS handshake within {timeout:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(  # (asyncio's hang-up in the handshake has no text)
                f"TLS handshake: {str(exc) or type(exc).__name__}") from exc
        assert transport is not None
        # The protocol now hears from TLS's transport (start_tls does not tell it):
        # reading is paused and resumed there, or TLS never resumes it.
        self._protocol.transport = transport
        return _Stream(transport, self._protocol, self._transport)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle connection the upstream has closed
            return bool(self._protocol.received) or self._protocol.ended
        return self._transport.get_extra_info({
            "client_addr": "sockname", "server_addr": "peername"}.get(info, info))


async def _connect_tcp(host: str, port: int, timeout: float | None) -> _Stream:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await loop.create_connection(_Protocol, host, port)
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"no connection within {timeout:g} s") from None
    except OSError as exc:
        raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return _Stream(transport, protocol)


# What a kept-alive connection the upstream closed gives as the request goes out on it.
_CLOSED_UNDER_US = (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError)


class _Pool:
    """One upstream's kept-alive HTTP/1.1 connections (httpcore's own connection
    class), for httpx's transport: what of ``httpcore.AsyncConnectionPool`` a
    single-origin HTTP/1.1 client needs. That pool matches every queued request
    to every connection, with anyio locks and events, on each request and each
    answer's end.

    The last connection given back is the next one taken; one the upstream closed
    meanwhile, or idle past ``keepalive_expiry``, is closed instead. There is no
    limit on connections open at once; at most ``max_idle`` (None: any number) wait
    idle."""

    def __init__(self, ssl_context: ssl.SSLContext, max_idle: int | None,
                 keepalive_expiry: float | None) -> None:
        self._ssl_context = ssl_context
        self._max_idle = max_idle
        self._keepalive_expiry = keepalive_expiry
        self._idle: list[httpcore.AsyncHTTP11Connection] = []
        self._closed = False

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        """Send on the last connection given back; again, on the next, when that one
        turns out closed before any answer, until the request goes out on a new
        connection. An upstream closes idle connections after its keep-alive timeout
        (uvicorn: 5 s), one closed just as the request went out never read it (and a
        generation is safe to ask for twice), and the other idle ones may be just as
        dead (an upstream restarted behind a balancer). Only a new connection failing
        is the upstream's failure."""
        while True:
            connection = await self._idle_one()
            kept = connection is not None
            if connection is None:
                connection = await self._connect(request)
            try:
                # On a failure the connection closes itself (httpcore's): nothing to
                # give back.
                response = await connection.handle_async_request(request)
            except _CLOSED_UNDER_US as exc:
                if not kept:
                    raise
                log.debug("upstream %s closed a kept-alive connection (%s): sending again",
                          request.url.host.decode("ascii"), type(exc).__name__)
                continue
            assert isinstance(response.stream, AsyncIterable)
            response.stream = _Body(self, connection, response.stream)
            return response

    async def _idle_one(self) -> httpcore.AsyncHTTP11Connection | None:
        idle = self._idle
        while idle and idle[0].has_expired():  # the oldest first: they expire first
            await idle.pop(0).aclose()
        while idle:
            connection = idle.pop()
            if connection.is_available() and not connection.has_expired():
                return connection
            await connection.aclose()
        return None

    async def _connect(self, request: httpcore.Request) -> httpcore.AsyncHTTP11Connection:
        url = request.url
        timeout = request.extensions.get("timeout", {}).get("connect")
        trace = request.extensions.get("trace")
        step = "connect_tcp"
        try:
            stream = await _connect_tcp(url.host.decode("ascii"), url.port or (
                443 if url.scheme == b"https" else 80), timeout)
            if url.scheme == b"https":
                step = "start_tls"
                stream = await stream.start_tls(self._ssl_context, url.host.decode("ascii"),
                                                timeout=timeout)
        except Exception as exc:
            if trace is not None:  # as httpcore's own connections report it
                await trace(f"connection.{step}.failed", {"exception": exc})
            raise
        origin = httpcore.Origin(url.scheme, url.host, url.port or 0)
        return httpcore.AsyncHTTP11Connection(origin, stream, self._keepalive_expiry)

    async def give_back(self, connection: httpcore.AsyncHTTP11Connection) -> None:
        """A connection whose answer was closed: kept if it can serve another."""
        if connection.is_available() and not self._closed and (
                self._max_idle is None or len(self._idle) < self._max_idle):
            self._idle.append(connection)
        elif not connection.is_closed():
            await connection.aclose()

    async def aclose(self) -> None:
        """Close the idle connections; those in use close as their answers do."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.aclose()

    async def __aenter__(self) -> _Pool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _Body:
    """An answer's body, its connection given back to the pool once it is closed."""

    def __init__(self, pool: _Pool, connection: httpcore.AsyncHTTP11Connection,
                 stream: AsyncIterable[bytes]) -> None:
        self._pool, self._connection, self._stream = pool, connection, stream

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()  # type: ignore[attr-defined]
        finally:
            await self._pool.give_back(self._connection)


class _Transport(httpx.AsyncHTTPTransport):
    """httpx's transport (TLS verified as httpx does, httpcore's errors mapped to
    httpx's), its pool a ``_Pool``."""

    def __init__(self, limits: httpx.Limits) -> None:
        context = httpx.create_ssl_context()
        super().__init__(verify=context, limits=limits)
        self._pool = _Pool(context, max_idle=limits.max_keepalive_connections,  # type: ignore[assignment]
                           keepalive_expiry=limits.keepalive_expiry)


def _json(body: Any) -> bytes:
    # Python's own parser took these from the client (NaN, Infinity, 1e400, a lone
    # surrogate) in fields the front passes on unchecked: the client's mistake.
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode()
    except UnicodeEncodeError:
        raise BadRequest("the request contains a lone UTF-16 surrogate (such as \\ud800),"
                         " which is not valid Unicode text") from None
    except ValueError:
        raise BadRequest("the request contains NaN, Infinity or a number too large for"
                         " a double, which JSON cannot carry") from None


class UpstreamClient:
    """One upstream server (``url``: scheme, host, port and an optional path prefix),
    its kept-alive connections pooled."""

    def __init__(self, url: str, *, api_key: str | None, timeout: httpx.Timeout,
                 limits: httpx.Limits) -> None:
        given = httpx.URL(url)
        # Credentials in the URL go as a header (as httpx's client sends them), never in
        # a URL that a log line or an error could show.
        self._base = given.copy_with(userinfo=b"")
        self._prefix = self._base.raw_path.rstrip(b"/")
        self._headers = [(b"User-Agent", f"starchart/{__version__}".encode())]
        if given.userinfo:
            credentials = f"{given.username}:{given.password}".encode()
            self._headers.append((b"Authorization", b"Basic " + base64.b64encode(credentials)))
        elif api_key:
            self._headers.append((b"Authorization", f"Bearer {api_key}".encode()))
        self._timeout = timeout.as_dict()
        self._urls: dict[str, httpx.URL] = {}
        self._transport = _Transport(limits)

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self._base.copy_with(
                raw_path=self._prefix + path.encode("ascii"))
        return url

    async def send(self, method: str, path: str, body: Any = None, *,
                   timeout: httpx.Timeout | None = None,
                   extensions: dict[str, Any] | None = None) -> httpx.Response:
        """Send ``body`` (JSON) to ``path``; the answer's head, its body to be read
        (``aiter_bytes``, ``aread``) and the response closed (``aclose``).
        httpx's errors (``httpx.HTTPError``) as httpx raises them; ``BadRequest``
        for a body JSON cannot carry."""
        headers = self._headers
        content = None
        if body is not None:
            content = _json(body)
            headers = [*headers, (b"Content-Type", b"application/json")]
        request = httpx.Request(method, self._url(path), headers=headers, content=content,
                                extensions={"timeout": self._timeout if timeout is None
                                            else timeout.as_dict(), **(extensions or {})})
        response = await self._transport.handle_async_request(request)
        response.request = request
        log.debug('HTTP Request: %s %s "%s %d %s"', method, request.url,
                  response.http_version, response.status_code, response.reason_phrase)
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()
