"""HTTP to upstreams: httpx's requests, responses and errors, over an httpx
transport of our own (httpx's documented extension point): HTTP/1.1 on asyncio's
transports and protocols, answers parsed by httptools (llhttp, the C parser
uvicorn serves with).

Measured side by side against an upstream that answers at once (8 concurrent
streams, 2 cores), the relay's own CPU cost per request was mostly its HTTP
client's. What httpx's usual stack does and this one does not:

- ``httpx.AsyncClient``: a request is built from a URL and headers made once
  per upstream, and the cookie jar is not consulted (the front serves every
  user: an upstream's cookie must not go out with another user's request).
  Upstreams are reached directly: the ``HTTP(S)_PROXY`` variables are not used
  for them (``SSL_CERT_FILE``/``SSL_CERT_DIR`` are, as httpx does).
- httpcore's connection pool: ``_Pool`` keeps one origin's HTTP/1.1 connections,
  the last one given back taken first.
- httpcore's HTTP/1.1 connections on h11 and anyio's socket streams: a
  ``_Connection`` writes a request's head and body in one write, and hands the
  parser every byte as it arrives, so an answer's head and each piece of its body
  are ready for the one reader without a call per step. Whether an idle
  kept-alive connection was closed by the upstream is known from what the
  protocol has seen, without a ``poll()``. Reading stops (``pause_reading``) while
  ``READ_AHEAD_BYTES`` of body wait unread, so a slow client slows the upstream
  down instead of filling memory.

Measured with the relay (8 streams at once, an instant upstream): h11 and
httpcore were about 310 of the 2,340 Python calls a relayed request made.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import httptools
import httpx

from starchart import __version__
from starchart.errors import BadRequest

log = logging.getLogger("starchart.upstream")

READ_AHEAD_BYTES = 256 * 1024
# An answer's status line and headers: far above any real one (h11's limit is 16 KiB).
MAX_HEAD_BYTES = 64 * 1024

# What a kept-alive connection the upstream closed gives as the request goes out on it.
_CLOSED_UNDER_US = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection to an upstream: a request at a time, its answer
    parsed as bytes arrive (httptools calls the ``on_*`` methods), for one reader."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # Under TLS, what TLS has encrypted waits in the socket's own transport.
        self.socket_transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self.ended = False  # the upstream's end of stream, or the connection lost
        self.error: httpx.TransportError | None = None
        self.can_write = True
        self._paused = False
        self.busy = False  # a request sent, its answer not complete
        self.idle_until = 0.0  # (the event loop's clock) kept idle until then
        self._answer_start()

    def _answer_start(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self.head_done = False
        self._informational = False
        self._until_eof = False
        self.body: list[bytes] = []
        self._body_bytes = 0
        self.complete = False
        self.keep_alive = False

    # asyncio's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses)
        self.transport = self.socket_transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            self._parser.feed_data(data)
        # (a callback's own errors included; an upgrade is nothing starchart asked for)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            reason = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) \
                else exc
            self._fail(httpx.RemoteProtocolError(
                f"the upstream's answer is not valid HTTP/1.1: {reason}"))
            return
        if not self.head_done:
            # Counted here, not as headers arrive: httptools gathers a header's
            # pieces itself, however long, before it shows the header.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(httpx.RemoteProtocolError(
                    f"the upstream's answer head is larger than {MAX_HEAD_BYTES >> 10} KiB"))

    def eof_received(self) -> bool:
        if self.head_done and self._until_eof and not self.complete:
            self.complete = True  # a body without a length ends with the connection
        self.ended = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof_received()
        if exc is not None and self.error is None:
            self.error = httpx.ReadError(str(exc) or type(exc).__name__)
        self.can_write = True  # a writer waiting for room finds the connection gone
        self._wake()

    def pause_writing(self) -> None:
        self.can_write = False

    def resume_writing(self) -> None:
        self.can_write = True
        self._wake()

    # httptools' side

    def on_message_begin(self) -> None:
        if not self.busy:
            raise httptools.HttpParserError("bytes that answer no request")

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._informational = True  # (103 Early Hints, say): the answer follows
            return
        self.status = status
        self._until_eof = not any(name.lower() in (b"content-length", b"transfer-encoding")
                                  for name, _ in self.headers)
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self._body_bytes += len(body)
        if self._body_bytes >= READ_AHEAD_BYTES and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._answer_start()
            return
        self.keep_alive = self._parser.should_keep_alive()
        self.complete = True
        self.busy = False
        self._wake()

    # the reader's side

    def _fail(self, error: httpx.TransportError) -> None:
        self.error = error
        self.ended = True
        if self.transport is not None:
            self.transport.abort()
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

    async def exchange(self, request: httpx.Request, message: bytes,
                       timeouts: dict[str, float | None],
                       on_sent: Callable[[], None] | None) -> None:
        """Write ``message`` (``request``'s head and body), then wait for the answer's
        head; its body is read from the connection."""
        transport = self.transport
        if self.ended or transport is None or transport.is_closing():
            raise httpx.WriteError("the connection is closed", request=request)
        self._answer_start()
        self.busy = True
        transport.write(message)
        await self._written(request, timeouts.get("write"))
        if on_sent is not None:
            on_sent()
        timeout = timeouts.get("read")
        try:
            await self.wait_until(lambda: self.head_done or self.ended, timeout)
        except TimeoutError:
            raise httpx.ReadTimeout(f"no answer within {timeout:g} s",
                                    request=request) from None
        if not self.head_done:
            raise self.error or httpx.RemoteProtocolError(
                "the upstream closed the connection without answering", request=request)

    async def _written(self, request: httpx.Request, timeout: float | None) -> None:
        """Until the socket takes more (below its transport's high-water mark); a
        ``WriteTimeout`` when the upstream took nothing for ``timeout`` seconds."""
        while not self.can_write:
            left = self._unsent()
            try:
                await self.wait_until(lambda: self.can_write, timeout)
            except TimeoutError:
                if self._unsent() < left:
                    continue  # slow, not stuck
                raise httpx.WriteTimeout(f"the upstream took nothing for {timeout:g} s",
                                         request=request) from None
        if self.ended and not self.head_done:
            raise self.error or httpx.WriteError("the connection is closed", request=request)

    def _unsent(self) -> int:
        transport, socket_transport = self.transport, self.socket_transport
        return (transport.get_write_buffer_size() if transport else 0) + (
            socket_transport.get_write_buffer_size()
            if socket_transport and socket_transport is not transport else 0)

    def response(self, body: _Body, request: httpx.Request) -> httpx.Response:
        return httpx.Response(self.status, headers=self.headers, stream=body, request=request,
                              extensions={"http_version": b"HTTP/1.1",
                                          "reason_phrase": self.reason})

    def take_body(self) -> bytes:
        body = b"".join(self.body) if len(self.body) > 1 else self.body[0]
        self.body.clear()
        self._body_bytes = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return body

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.ended and self.error is None

    def close(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._unsent():
            # A request given up on before the upstream took it all: close() would
            # keep the socket and the bytes until a stuck upstream reads them.
            transport.abort()
        else:
            transport.close()


class _Body(httpx.AsyncByteStream):
    """An answer's body as it arrives; its connection given back to the pool once
    the answer is closed."""

    def __init__(self, pool: _Pool, connection: _Connection, request: httpx.Request,
                 timeout: float | None) -> None:
        self._pool, self._connection = pool, connection
        self._request, self._timeout = request, timeout
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            if connection.body:
                yield connection.take_body()
            elif connection.complete:
                return
            elif connection.ended:
                raise connection.error or httpx.RemoteProtocolError(
                    "the upstream closed the connection before the answer's end",
                    request=self._request)
            else:
                try:
                    await connection.wait_until(
                        lambda: bool(connection.body) or connection.complete
                        or connection.ended, self._timeout)
                except TimeoutError:
                    raise httpx.ReadTimeout(f"nothing to read within {self._timeout:g} s",
                                            request=self._request) from None

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.give_back(self._connection)


class _Pool(httpx.AsyncBaseTransport):
    """One upstream's kept-alive HTTP/1.1 connections, as an httpx transport.

    The last connection given back is the next one taken; one the upstream closed
    meanwhile, or idle past ``keepalive_expiry``, is closed instead. There is no
    limit on connections open at once; at most ``max_idle`` (None: any number) wait
    idle. A request's ``on_sent`` extension, when given, is called once the request
    is written, or could not be."""

    def __init__(self, max_idle: int | None, keepalive_expiry: float | None) -> None:
        self._ssl_context = httpx.create_ssl_context()  # as httpx verifies
        self._max_idle = max_idle
        self._keepalive_expiry = keepalive_expiry
        self._idle: list[_Connection] = []
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send on the last connection given back; again, on the next, when that one
        turns out closed before any answer, until the request goes out on a new
        connection. An upstream closes idle connections after its keep-alive timeout
        (uvicorn: 5 s), one closed just as the request went out never read it (and a
        generation is safe to ask for twice), and the other idle ones may be just as
        dead (an upstream restarted behind a balancer). Only a new connection failing
        is the upstream's failure."""
        on_sent: Callable[[], None] | None = request.extensions.get("on_sent")
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        message = _message(request)
        try:
            while True:
                connection = self._idle_one()
                kept = connection is not None
                if connection is None:
                    connection = await self._connect(request, timeouts.get("connect"))
                try:
                    await connection.exchange(request, message, timeouts, on_sent)
                except _CLOSED_UNDER_US as exc:
                    connection.close()
                    if not kept:
                        raise
                    log.debug("upstream %s closed a kept-alive connection (%s): sending again",
                              request.url.host, type(exc).__name__)
                    continue
                except BaseException:
                    connection.close()
                    raise
                return connection.response(
                    _Body(self, connection, request, timeouts.get("read")), request)
        except BaseException:
            if on_sent is not None:
                on_sent()  # (it may be called again: once is what counts)
            raise

    def _idle_one(self) -> _Connection | None:
        idle = self._idle
        now = asyncio.get_running_loop().time()
        while idle and idle[0].idle_until < now:  # the oldest first: they expire first
            idle.pop(0).close()
        while idle:
            connection = idle.pop()
            if connection.reusable() and connection.idle_until >= now:
                return connection
            connection.close()
        return None

    async def _connect(self, request: httpx.Request, timeout: float | None) -> _Connection:
        url = request.url
        host, port = url.host, url.port or (443 if url.scheme == "https" else 80)
        loop = asyncio.get_running_loop()
        step = "connection"
        try:
            async with asyncio.timeout(timeout):
                transport, connection = await loop.create_connection(_Connection, host, port)
                if url.scheme == "https":
                    step = "TLS handshake"
                    try:
                        tls = await loop.start_tls(transport, connection, self._ssl_context,
                                                   server_hostname=host)
                    except BaseException:
                        transport.close()
                        raise
                    assert tls is not None
                    # The connection now hears from TLS's transport (start_tls does not
                    # tell it): reading is paused and resumed there.
                    connection.transport = tls
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no {step} within {timeout:g} s",
                                       request=request) from None
        except (OSError, ssl.SSLError) as exc:
            # (asyncio's hang-up in the handshake has no text)
            text = str(exc) or type(exc).__name__
            raise httpx.ConnectError(text if step == "connection" else f"{step}: {text}",
                                     request=request) from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def give_back(self, connection: _Connection) -> None:
        """A connection whose answer was closed: kept if it can serve another."""
        if connection.reusable() and not self._closed and (
                self._max_idle is None or len(self._idle) < self._max_idle):
            connection.idle_until = asyncio.get_running_loop().time() + (
                float("inf") if self._keepalive_expiry is None else self._keepalive_expiry)
            self._idle.append(connection)
        else:
            connection.close()

    async def aclose(self) -> None:
        """Close the idle connections; those in use close as their answers do."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _message(request: httpx.Request) -> bytes:
    """The request as it goes on the wire: its head (httpx added ``Host`` and
    ``Content-Length``) and its body."""
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), request.url.raw_path)]
    lines += [b"%s: %s" % header for header in request.headers.raw]
    return b"\r\n".join(lines) + b"\r\n\r\n" + request.content


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
        # A gateway's path goes before each OpenAI path, its query (``?api-version=``)
        # after it.
        self._prefix = given.raw_path.partition(b"?")[0].rstrip(b"/")
        self._query = b"?" + given.query if given.query else b""
        self._headers = [(b"User-Agent", f"starchart/{__version__}".encode())]
        if given.userinfo:
            credentials = f"{given.username}:{given.password}".encode()
            self._headers.append((b"Authorization", b"Basic " + base64.b64encode(credentials)))
        elif api_key:
            self._headers.append((b"Authorization", f"Bearer {api_key}".encode()))
        self._timeout = timeout.as_dict()
        self._urls: dict[str, httpx.URL] = {}
        self._transport = _Pool(max_idle=limits.max_keepalive_connections,
                                keepalive_expiry=limits.keepalive_expiry)

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self._base.copy_with(
                raw_path=self._prefix + path.encode("ascii") + self._query)
        return url

    async def send(self, method: str, path: str, body: Any = None, *,
                   timeout: httpx.Timeout | None = None,
                   on_sent: Callable[[], None] | None = None) -> httpx.Response:
        """Send ``body`` (JSON) to ``path``; the answer's head, its body to be read
        (``aiter_bytes``, ``aread``) and the response closed (``aclose``).
        httpx's errors (``httpx.HTTPError``) as httpx raises them; ``BadRequest``
        for a body JSON cannot carry. ``on_sent`` is called once the request is
        written, or could not be."""
        headers = self._headers
        content = None
        if body is not None:
            content = _json(body)
            headers = [*headers, (b"Content-Type", b"application/json")]
        request = httpx.Request(method, self._url(path), headers=headers, content=content,
                                extensions={"timeout": self._timeout if timeout is None
                                            else timeout.as_dict(), "on_sent": on_sent})
        response = await self._transport.handle_async_request(request)
        log.debug('HTTP Request: %s %s "%s %d %s"', method, request.url,
                  response.http_version, response.status_code, response.reason_phrase)
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()
