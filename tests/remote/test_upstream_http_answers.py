"""How the HTTP client to upstreams reads answers that are unusual but legal, and
answers that are not HTTP at all, from raw servers on loopback (under both event
loops): what it keeps, what it refuses, and which connections it uses again."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import httpx
import pytest

from starchart.engines.upstream_http import MAX_HEAD_BYTES, _Connection

from tests.remote.raw_upstream import read_request
from tests.remote.test_upstream_http import answer, client, fetch, run, serve

__all__ = ["run"]  # the fixture, shared with test_upstream_http


def serve_answers(*answers: bytes, close: bool = False) -> Any:
    """A handler that answers each request on a connection with the next of
    ``answers`` (then closes the connection when ``close``); counts connections."""
    def handler_factory() -> tuple[Any, list[int]]:
        connections = [0]

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections[0] += 1
            for reply in answers:
                try:
                    await read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                writer.write(reply)
                await writer.drain()
                if close:
                    writer.close()
                    return
            await reader.read()
        return handler, connections
    return handler_factory()


async def twice(url: str) -> list[str]:
    async with client(url) as http:
        return [await fetch(http, "GET", "/"), await fetch(http, "GET", "/")]


def test_an_informational_answer_before_the_answer_is_passed_over(run: Any) -> None:
    handler, connections = serve_answers(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + answer(b"one"),
        answer(b"two"))

    async def main() -> list[str]:
        server, url = await serve(handler)
        async with server:
            return await twice(url)

    assert run(main()) == ["one", "two"]
    assert connections == [1]


def test_a_body_without_a_length_ends_with_its_connection(run: Any) -> None:
    handler, connections = serve_answers(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close=True)

    async def main() -> list[str]:
        server, url = await serve(handler)
        async with server:
            return await twice(url)

    assert run(main()) == ["until the end"] * 2
    assert connections == [2]  # never kept: it ended with the body


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
])
def test_an_answer_that_closes_its_connection_is_not_kept(run: Any, reply: bytes) -> None:
    handler, connections = serve_answers(reply, reply)

    async def main() -> list[str]:
        server, url = await serve(handler)
        async with server:
            return await twice(url)

    assert run(main()) == ["ok", "ok"]
    assert connections == [2]


def test_a_chunked_answer_arriving_a_byte_at_a_time_is_whole(run: Any) -> None:
    body = b"data: one\n\ndata: [DONE]\n\n"
    reply = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in body.split(b"\n\n")
                        if part) + b"0\r\n\r\n")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for i in range(len(reply)):
            writer.write(reply[i:i + 1])
            await writer.drain()
            await asyncio.sleep(0)
        await reader.read()

    async def main() -> str:
        server, url = await serve(handler)
        async with server, client(url) as http:
            return await fetch(http, "GET", "/")

    assert run(main()) == "data: onedata: [DONE]"


def test_a_compressed_answer_is_read_decompressed(run: Any) -> None:
    """starchart asks for no compression, but an upstream (or a proxy before it)
    may compress anyway: httpx's response decodes it."""
    packed = gzip.compress(b'{"ok": true}')
    handler, _ = serve_answers(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                               b"Content-Length: %d\r\n\r\n%s" % (len(packed), packed))

    async def main() -> str:
        server, url = await serve(handler)
        async with server, client(url) as http:
            return await fetch(http, "GET", "/")

    assert run(main()) == '{"ok": true}'


@pytest.mark.parametrize("reply, error, says", [
    (b"SSH-2.0-OpenSSH_9.2\r\n", httpx.RemoteProtocolError, "not valid HTTP/1.1"),
    (b"HTTP/1.1 200 OK\r\n" + b"X-Padding: " + b"x" * (16 * MAX_HEAD_BYTES) + b"\r\n\r\n",
     httpx.RemoteProtocolError, "larger than 64 KiB"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
     httpx.RemoteProtocolError, "not valid HTTP/1.1"),
    (b"", httpx.RemoteProtocolError, "without answering"),
])
def test_an_answer_that_is_not_http_is_a_protocol_error(
        run: Any, reply: bytes, error: type[Exception], says: str) -> None:
    handler, _ = serve_answers(reply, close=True)

    async def main() -> None:
        server, url = await serve(handler)
        async with server, client(url) as http:
            await fetch(http, "GET", "/")

    with pytest.raises(error, match=says):
        run(main())


def test_a_switch_of_protocols_is_an_answer_and_its_connection_is_dropped(run: Any) -> None:
    handler, connections = serve_answers(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade"
        b"\r\n\r\nwebsocket bytes", answer(b"never"))
    errors: list[dict[str, Any]] = []  # what the event loop was left to report (the
    # server's handlers cancelled at its close, and, in error, the client's connection)

    async def main() -> list[int]:
        asyncio.get_running_loop().set_exception_handler(lambda _, error: errors.append(error))
        server, url = await serve(handler)
        async with server, client(url) as http:
            statuses = []
            for _ in range(2):
                response = await http.send("GET", "/")
                statuses.append(response.status_code)
                await response.aread()
                await response.aclose()
            return statuses

    assert run(main()) == [101, 101]
    assert connections == [2]
    assert not [error for error in errors if isinstance(error.get("protocol"), _Connection)]


def test_an_answer_cut_short_is_an_error_and_its_connection_is_dropped(run: Any) -> None:
    handler, connections = serve_answers(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", close=True)

    async def main() -> None:
        server, url = await serve(handler)
        async with server, client(url) as http:
            with pytest.raises(httpx.RemoteProtocolError, match="before the answer's end"):
                await fetch(http, "GET", "/")
            with pytest.raises(httpx.RemoteProtocolError):
                await fetch(http, "GET", "/")

    run(main())
    assert connections == [2]


def test_bytes_nobody_asked_for_make_an_idle_connection_unusable(run: Any) -> None:
    """An answer followed by more than it said (a second answer, or junk): the
    connection is not used again; the next request goes out on a new one."""
    handler, connections = serve_answers(answer(b"ok") + b"HTTP/1.1 200 OK\r\n\r\nextra",
                                         answer(b"never"))

    async def main() -> list[str]:
        server, url = await serve(handler)
        async with server:
            async with client(url) as http:
                first = await fetch(http, "GET", "/")
                await asyncio.sleep(0.1)  # the extra bytes arrive on the idle connection
                return [first, await fetch(http, "GET", "/")]

    assert run(main()) == ["ok", "ok"]
    assert connections == [2]


def test_a_query_in_the_upstream_url_goes_after_each_path(run: Any) -> None:
    """A gateway that wants a query on every request (``?api-version=...``): the
    OpenAI path goes before it, not into it."""
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((await read_request(reader)).split(b"\r\n", 1)[0])
        writer.write(answer(b"ok"))
        await writer.drain()
        await reader.read()

    async def main() -> str:
        server, url = await serve(handler)
        async with server, client(url + "/gateway/?api-version=2024-06-01") as http:
            return await fetch(http, "GET", "/v1/models")

    assert run(main()) == "ok"
    assert seen == [b"GET /gateway/v1/models?api-version=2024-06-01 HTTP/1.1"]
