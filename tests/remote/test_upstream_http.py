"""The HTTP client to upstreams (``engines/upstream_http``) against raw servers on
loopback, under both event loops a front can run on (uvicorn picks uvloop when it
is installed): answers, kept-alive connections, an idle connection the upstream
closed, refusals, back-pressure both ways, TLS, a path prefix, no cookies kept."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop

from starchart.engines import upstream_http
from starchart.engines.upstream_http import READ_AHEAD_BYTES, UpstreamClient

from tests.conftest import free_port
from tests.remote.raw_upstream import read_request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    if request.param == "uvloop":
        return uvloop.run
    return asyncio.run


@asynccontextmanager
async def client(url: str, **timeouts: float | None) -> AsyncIterator[UpstreamClient]:
    http = UpstreamClient(url, api_key=None, timeout=httpx.Timeout(5.0, **timeouts),
                          limits=httpx.Limits())
    try:
        yield http
    finally:
        await http.aclose()


async def fetch(http: UpstreamClient, method: str, path: str, body: Any = None) -> str:
    response = await http.send(method, path, body)
    try:
        return (await response.aread()).decode()
    finally:
        await response.aclose()


async def serve(handler: Handler, ssl_context: ssl.SSLContext | None = None
                ) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    return server, f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"


def answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def test_answers_come_back_and_one_connection_serves_many(run: Any) -> None:
    connections = 0
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with pytest.raises(asyncio.IncompleteReadError):
            while True:
                seen.append(await read_request(reader))
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")

    async def main() -> list[str]:
        server, url = await serve(handler)
        async with server, client(url) as http:
            texts = []
            for n in range(3):
                texts.append(await fetch(http, "POST", "/v1/chat/completions", {"n": n}))
            return texts

    assert run(main()) == ["hello world"] * 3
    assert connections == 1
    assert [s.rsplit(b"\r\n\r\n", 1)[1] for s in seen] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']


def test_an_idle_connection_the_upstream_closed_is_not_used_again(run: Any) -> None:
    """An upstream closing a kept-alive connection between requests (as uvicorn does
    after 5 s idle): the next request goes out on a new one, without an error."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(answer(b"ok"))
        await writer.drain()
        writer.close()  # no "Connection: close": the client learns it from the socket

    async def main() -> list[int]:
        server, url = await serve(handler)
        async with server, client(url) as http:
            statuses = []
            for _ in range(3):
                response = await http.send("GET", "/v1/models")
                await response.aclose()
                statuses.append(response.status_code)
                await asyncio.sleep(0.05)  # the close reaches the client's side
            return statuses

    assert run(main()) == [200, 200, 200]
    assert connections == 3


def test_a_refused_connection_is_a_connect_error(run: Any) -> None:
    async def main() -> None:
        async with client(f"http://127.0.0.1:{free_port()}") as http:
            await http.send("GET", "/v1/models")

    with pytest.raises(httpx.ConnectError):
        run(main())


def test_a_slow_reader_leaves_the_rest_of_a_large_answer_upstream(run: Any) -> None:
    """Reading stops while READ_AHEAD_BYTES wait unread: a slow client slows the
    upstream down (its writes wait) instead of filling the front's memory; reading
    on takes it all."""
    size = 48 * 2**20  # far more than the kernel's socket buffers hold
    written = 0
    held: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        piece = b"x" * 2**20
        for _ in range(size // len(piece)):
            writer.write(piece)
            await writer.drain()
            written += len(piece)

    async def main() -> int:
        server, url = await serve(handler)
        async with server, client(url) as http:
            response = await http.send("GET", "/big")
            chunks = response.aiter_raw()
            total = len(await anext(chunks))
            await asyncio.sleep(0.5)  # the upstream writes all it can meanwhile
            held.append(written)
            async for chunk in chunks:
                total += len(chunk)
            await response.aclose()
            return total

    assert run(main()) == size
    assert held[0] < size // 2  # socket buffers and READ_AHEAD_BYTES, not the rest


def test_an_upstream_that_takes_nothing_is_a_write_timeout(run: Any) -> None:
    """A request body the upstream never reads: the write waits for room in the
    socket's buffer for the write timeout, then fails."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def main() -> None:
        server, url = await serve(handler)
        async with server, client(url, write=0.5) as http:
            await http.send("POST", "/v1/chat/completions", "x" * (64 * 2**20))

    with pytest.raises(httpx.WriteTimeout):
        run(main())


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (Debian's openssl)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_a_tls_upstream_is_verified_against_ssl_cert_file(
        run: Any, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """An https upstream with a private CA: trusted through SSL_CERT_FILE (as httpx
    does), refused without it."""
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with pytest.raises((asyncio.IncompleteReadError, ssl.SSLError, ConnectionError)):
            await read_request(reader)
            writer.write(answer(b"secret"))
            await writer.drain()
            await reader.read()

    async def main() -> str:
        server, url = await serve(handler, server_context)
        async with server, client(url) as http:
            return await fetch(http, "GET", "/v1/models")

    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        run(main())
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    assert run(main()) == "secret"


def test_a_path_prefix_a_key_and_no_cookies_kept(run: Any) -> None:
    """An upstream under a path (behind a gateway): the prefix goes before every
    path; the key goes with every request; a cookie the upstream sets never comes
    back (the front serves every user with one client)."""
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with pytest.raises(asyncio.IncompleteReadError):
            while True:
                seen.append(await read_request(reader))
                writer.write(b"HTTP/1.1 200 OK\r\nSet-Cookie: user=alice; Path=/\r\n"
                             b"Content-Length: 2\r\n\r\nok")

    async def main() -> None:
        server, url = await serve(handler)
        http = UpstreamClient(url + "/gateway/", api_key="sk-up", timeout=httpx.Timeout(5.0),
                              limits=httpx.Limits())
        async with server:
            try:
                for _ in range(2):
                    assert await fetch(http, "POST", "/v1/chat/completions", {"a": 1}) == "ok"
            finally:
                await http.aclose()

    run(main())
    assert [s.split(b"\r\n", 1)[0] for s in seen] == \
        [b"POST /gateway/v1/chat/completions HTTP/1.1"] * 2
    assert all(b"\r\nAuthorization: Bearer sk-up\r\n" in s for s in seen)
    assert all(b"\r\nContent-Type: application/json\r\n" in s for s in seen)
    assert not any(b"alice" in s for s in seen)
    assert all(b"\r\nUser-Agent: starchart/" in s for s in seen)
    assert not any(b"accept-encoding" in s.lower() for s in seen)  # streams uncompressed


def test_idle_connections_are_kept_up_to_the_limit_and_until_they_expire(run: Any) -> None:
    """Two answers at once, one idle connection kept (``max_keepalive_connections``):
    the next request reuses it; after ``keepalive_expiry`` idle, a new one is opened."""
    connections = 0
    closed = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections, closed
        connections += 1
        try:
            while True:
                await read_request(reader)
                await asyncio.sleep(0.05)  # the two requests overlap
                writer.write(answer(b"ok"))
        except asyncio.IncompleteReadError:
            closed += 1

    async def main() -> None:
        server, url = await serve(handler)
        http = UpstreamClient(url, api_key=None, timeout=httpx.Timeout(5.0),
                              limits=httpx.Limits(max_keepalive_connections=1,
                                                  keepalive_expiry=0.3))
        async with server:
            try:
                assert await asyncio.gather(*(fetch(http, "GET", "/") for _ in range(2))) \
                    == ["ok", "ok"]
                await asyncio.sleep(0.05)
                assert (connections, closed) == (2, 1)  # the second was not kept
                assert await fetch(http, "GET", "/") == "ok"
                assert connections == 2  # the kept one served it
                await asyncio.sleep(0.4)
                assert await fetch(http, "GET", "/") == "ok"
                assert connections == 3  # the kept one had expired
            finally:
                await http.aclose()

    run(main())


def test_a_connection_whose_answer_broke_is_not_used_again(run: Any) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        if connections == 1:  # half an answer, then the connection breaks
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
            await writer.drain()
            writer.transport.abort()
            return
        writer.write(answer(b"whole"))
        await writer.drain()

    async def main() -> str:
        server, url = await serve(handler)
        async with server, client(url) as http:
            with pytest.raises(httpx.HTTPError):
                await fetch(http, "GET", "/")
            return await fetch(http, "GET", "/")

    assert run(main()) == "whole"
    assert connections == 2


def test_a_failed_connection_counts_as_sent(run: Any) -> None:
    """The relay passes the upstream queue's turn on (``on_sent``) when the request
    could not even connect, as when it is written."""
    sent: list[str] = []

    async def main() -> None:
        async with client(f"http://127.0.0.1:{free_port()}") as http:
            await http.send("GET", "/", on_sent=lambda: sent.append("sent"))

    with pytest.raises(httpx.ConnectError):
        run(main())
    assert sent


def test_a_written_request_counts_as_sent_before_its_answer(run: Any) -> None:
    order: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        order.append("read upstream")
        await asyncio.sleep(0.2)
        writer.write(answer(b"ok"))
        await writer.drain()

    async def main() -> str:
        server, url = await serve(handler)
        async with server, client(url) as http:
            response = await http.send("GET", "/", on_sent=lambda: order.append("sent"))
            order.append("answered")
            try:
                return (await response.aread()).decode()
            finally:
                await response.aclose()

    assert run(main()) == "ok"
    assert order == ["sent", "read upstream", "answered"]


def test_an_answer_closed_after_the_client_is_not_kept(run: Any) -> None:
    """At shutdown the client closes while a stream is still being relayed: that
    stream's connection closes with it instead of waiting idle for nobody."""
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"late"))
        await writer.drain()
        await reader.read()  # until the client closes the connection
        closed.set()

    async def main() -> None:
        server, url = await serve(handler)
        async with server:
            async with client(url) as http:
                response = await http.send("GET", "/")
            assert await response.aread() == b"late"  # read after the client closed
            await response.aclose()
            await asyncio.wait_for(closed.wait(), 5)

    run(main())


def test_a_large_answer_over_tls_is_read_to_its_end(
        run: Any, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading stops past READ_AHEAD_BYTES and starts again as the reader catches up,
    over TLS too: there the stream's transport is TLS's, not the socket's."""
    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    size = 8 * READ_AHEAD_BYTES

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await read_request(reader)
            writer.write(answer(b"x" * size))
            await writer.drain()
            await reader.read()

    async def main() -> int:
        server, url = await serve(handler, server_context)
        async with server, client(url) as http:
            response = await http.send("GET", "/big")
            total = 0
            async with asyncio.timeout(10):
                async for chunk in response.aiter_raw():
                    total += len(chunk)
                    await asyncio.sleep(0.001)  # a reader slower than loopback
            await response.aclose()
            return total

    assert run(main()) == size


def test_an_upstream_that_hangs_up_in_the_tls_handshake_is_a_connect_error_that_says_so(
        run: Any) -> None:
    """An https URL to a server that closes the connection on the client's hello: the
    error names what happened (the doctor and the front's 502 show nothing else)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def main() -> None:
        server, url = await serve(handler)
        async with server, client(url.replace("http:", "https:")) as http:
            await http.send("GET", "/v1/models")

    with pytest.raises(httpx.ConnectError, match=r"\w"):
        run(main())


def test_credentials_in_the_url_go_as_basic_auth(run: Any) -> None:
    """An upstream behind a proxy that wants a user and password, given in its URL
    (http://user:password@host): sent as Basic auth, as httpx's client sends them."""
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(answer(b"ok"))
        await writer.drain()
        writer.close()

    async def main() -> str:
        server, url = await serve(handler)
        async with server, client(url.replace("//", "//front:p%40ss@")) as http:
            return await fetch(http, "GET", "/v1/models")

    assert run(main()) == "ok"
    assert b"\r\nAuthorization: Basic ZnJvbnQ6cEBzcw==\r\n" in seen[0]  # front:p@ss
    assert b"front" not in seen[0].split(b"\r\n")[0]


def connections_made(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """The client's connections as they are made: (protocol, socket transport)."""
    made: list[tuple[Any, Any]] = []
    connection_made = upstream_http._Connection.connection_made

    def record(protocol: Any, transport: Any) -> None:
        made.append((protocol, transport))
        connection_made(protocol, transport)

    monkeypatch.setattr(upstream_http._Connection, "connection_made", record)
    return made


@pytest.mark.parametrize("how", ["write timeout", "cancelled"])
def test_a_request_given_up_on_before_it_is_written_lets_its_connection_go(
        run: Any, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request body the upstream never reads, given up on (the write timeout, or the
    client gone): the connection closes at once, its unsent bytes dropped; a graceful
    close would wait for the upstream to read them, holding the socket and the body
    for as long as it is stuck."""
    made = connections_made(monkeypatch)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def main() -> tuple[bool, int]:
        server, url = await serve(handler)
        async with server, client(url, write=0.5) as http:
            sending = asyncio.ensure_future(
                http.send("POST", "/v1/chat/completions", "x" * (64 * 2**20)))
            async with asyncio.timeout(10):  # until the body waits for room
                while not made:
                    await asyncio.sleep(0.05)
            protocol, transport = made[0]
            await asyncio.sleep(0.1)
            if how == "cancelled":
                sending.cancel()
            with pytest.raises((httpx.WriteTimeout, asyncio.CancelledError)):
                await sending
            await asyncio.sleep(0.1)
            return protocol.ended, transport.get_write_buffer_size()

    assert run(main()) == (True, 0)


def test_over_tls_a_request_given_up_on_lets_its_connection_go(
        run: Any, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, over TLS: there the unsent bytes wait, encrypted, in the socket's
    transport under TLS's, and TLS's close waits 30 s for them to go."""
    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    made = connections_made(monkeypatch)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def main() -> bool:
        server, url = await serve(handler, server_context)
        async with server, client(url) as http:
            sending = asyncio.ensure_future(
                http.send("POST", "/v1/chat/completions", "x" * (64 * 2**20)))
            async with asyncio.timeout(10):
                while not made:
                    await asyncio.sleep(0.05)
            protocol = made[0][0]
            await asyncio.sleep(0.5)  # past the handshake, into the body
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending
            await asyncio.sleep(0.2)
            return bool(protocol.ended)

    assert run(main())
