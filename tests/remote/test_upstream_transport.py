"""httpx's transport to upstreams on asyncio streams (``engines/upstream_transport``),
against raw servers on loopback, under both event loops a front can run on
(uvicorn picks uvloop when it is installed): answers, kept-alive connections,
an idle connection the upstream closed, refusals, back-pressure both ways, TLS."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop

from starchart.engines.upstream_transport import READ_AHEAD_BYTES, UpstreamTransport

from tests.conftest import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    if request.param == "uvloop":
        return uvloop.run
    return asyncio.run


def client(url: str, **timeouts: float | None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, transport=UpstreamTransport(httpx.Limits()),
                             timeout=httpx.Timeout(5.0, **timeouts))


async def serve(handler: Handler, ssl_context: ssl.SSLContext | None = None
                ) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    return server, f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


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
                response = await http.post("/v1/chat/completions", json={"n": n})
                texts.append(response.text)
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
                statuses.append((await http.get("/v1/models")).status_code)
                await asyncio.sleep(0.05)  # the close reaches the client's side
            return statuses

    assert run(main()) == [200, 200, 200]
    assert connections == 3


def test_a_refused_connection_is_a_connect_error(run: Any) -> None:
    async def main() -> None:
        async with client(f"http://127.0.0.1:{free_port()}") as http:
            await http.get("/v1/models")

    with pytest.raises(httpx.ConnectError):
        run(main())


def test_a_slow_reader_leaves_the_rest_of_a_large_answer_upstream(run: Any) -> None:
    """Reading stops while READ_AHEAD_BYTES wait unread: a slow client slows the
    upstream down instead of filling the front's memory; reading on takes it all."""
    size = 48 * 2**20  # far more than the kernel's socket buffers hold
    held: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        piece = b"x" * 2**20
        for _ in range(size // len(piece)):
            writer.write(piece)
            await writer.drain()

    async def main() -> int:
        server, url = await serve(handler)
        async with server, client(url) as http, http.stream("GET", "/big") as response:
            chunks = response.aiter_raw()
            total = len(await anext(chunks))
            await asyncio.sleep(0.5)  # the upstream writes all it can meanwhile
            pool = http._transport._pool  # type: ignore[attr-defined]
            stream = pool.connections[0]._connection._network_stream
            held.append(len(stream._protocol.received))
            async for chunk in chunks:
                total += len(chunk)
            return total

    assert run(main()) == size
    assert held[0] <= READ_AHEAD_BYTES + 2**20


def test_an_upstream_that_takes_nothing_is_a_write_timeout(run: Any) -> None:
    """A request body the upstream never reads: the write waits for room in the
    socket's buffer for the write timeout, then fails."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def main() -> None:
        server, url = await serve(handler)
        async with server, client(url, write=0.5) as http:
            await http.post("/v1/chat/completions", content=b"x" * (64 * 2**20))

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
            return (await http.get("/v1/models")).text

    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        run(main())
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    assert run(main()) == "secret"
