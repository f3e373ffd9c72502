"""An upstream that answers at once, for measuring a relay's own latency: a raw
asyncio HTTP/1.1 server (kept-alive connections) that lists one model, ``instant``,
and answers every POST with one streamed chat chunk, then ``[DONE]``. The chunk
carries ``"arrived"``: the moment (``time.perf_counter()``, the machine's
monotonic clock, the same in every process) the request had reached it, so a
client can tell how long a relay took to forward it.

    .venv/bin/python benchmarks/instant_upstream.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server_process import free_port

from starchart.bench.own_server import server_process

MODEL = "instant"
_LISTING = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()


class _Connection(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buffer += data
        while True:
            head, blank, rest = self.buffer.partition(b"\r\n\r\n")
            if not blank:
                return
            lines = head.split(b"\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in lines[1:]
                           if line.lower().startswith(b"content-length:")), 0)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            if lines[0].startswith(b"GET"):
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: %d\r\n\r\n" % len(_LISTING) + _LISTING)
                continue
            chunk = {"id": "instant", "object": "chat.completion.chunk", "created": 0,
                     "model": MODEL, "arrived": now, "choices": [
                         {"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
            body = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in (
                f"data: {json.dumps(chunk)}\n\n".encode(), b"data: [DONE]\n\n")) + b"0\r\n\r\n"
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n" + body)


async def _serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Connection, "127.0.0.1", port)
    await server.serve_forever()


@contextmanager
def instant_upstream() -> Iterator[str]:
    """Yield the URL of an instant upstream in a process of its own; stopped after."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="starchart-instant-") as home, server_process(
            [sys.executable, __file__, str(port)], f"http://127.0.0.1:{port}",
            log=Path(home) / "instant.log", ready_path="/v1/models", timeout=30) as url:
        yield url


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))
