"""Raw HTTP/1.1 upstreams on loopback (asyncio in a thread of their own), and a front
relaying to them. ``RawUpstream`` lists one model, ``raw``, and answers every POST
with the body pieces a test gives it, byte for byte, after a well-formed response
head (chunked transfer)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starchart.api.app import create_app
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port
from tests.scripted_engine import scripted

CHUNK = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "raw",
         "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]}
FIRST = f"data: {json.dumps(CHUNK)}\n\n".encode()

# What the upstream writes after its response head: one call per body piece; it
# returns False to stop (the upstream then ends the body properly).
Body = Callable[[int], bytes | None]
# A piece that breaks the connection instead, in the middle of the body.
BREAK = b"<the upstream breaks the connection here>"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request, head and body (by its Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


class LoopbackServer:
    """An asyncio server on a free loopback port, in a thread of its own, until
    ``close``; a subclass answers each connection in ``_handle`` (and sets its own
    attributes before calling ``__init__``: connections may come at once)."""

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self, started: threading.Event) -> None:
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RawUpstream(LoopbackServer):
    """Lists one model; answers every POST with a chunked event stream whose pieces
    come from ``body(i)`` for i = 0, 1, ... until it returns None, as fast as the
    front reads them."""

    def __init__(self) -> None:
        self.body: Body = lambda i: None
        self.status = b"200 OK"  # of every POST's answer
        self.head_delay = 0.0  # seconds before that answer's head
        self.sent = 0
        super().__init__()

    def __enter__(self) -> RawUpstream:
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        try:
            if (await read_request(reader)).startswith(b"GET"):
                listing = json.dumps({"object": "list", "data": [{"id": "raw"}]}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(listing) + listing)
            else:
                await asyncio.sleep(self.head_delay)
                writer.write(b"HTTP/1.1 " + self.status + b"\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                i = 0
                while (piece := self.body(i)) is not None:
                    i += 1
                    if piece == BREAK:
                        writer.transport.abort()
                        return
                    if piece:
                        writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                        self.sent += len(piece)
                        await writer.drain()
                writer.write(b"0\r\n\r\n")
            await writer.drain()
            writer.close()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass


@contextmanager
def relay_front(home: Path, *upstreams: str, **settings: Any) -> Iterator[LiveServer]:
    """A front on loopback relaying to ``upstreams`` (``--upstream`` values), beside a
    scripted local model; ``settings`` are the rest of its Settings."""
    app = create_app(Settings(home=home, upstream=list(upstreams), **settings),
                     engines=[scripted("local")])
    with LiveServer(app, free_port()) as server:
        yield server
