"""A request's head (request line and headers) is read up to a limit.

uvicorn's pure-Python parser (h11) refuses a head longer than 16 KiB; with its C
parser (httptools, which serve uses for speed) uvicorn sets no limit, and one header
that never ends is kept in memory for as long as the client goes on sending it. This
is uvicorn's httptools protocol with h11's limit: a head that grows past it is
answered 431 and its connection closed. A body is not counted.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_LIMIT = 16 * 1024  # bytes: h11's (uvicorn's h11_max_incomplete_event_size default)
_REFUSAL = b"Request header fields too large"


class BoundedHeadProtocol(HttpToolsProtocol):
    # Bytes received while a head is being read, after the read it began in (how much
    # of that read is head, and not the body before it, the parser does not say; a
    # read is at most 256 KiB); None from the end of a head to the next request's.
    _head: int | None = None
    _began = False  # a request began in the read being parsed

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._began = True

    def on_headers_complete(self) -> None:
        self._head = None
        self._began = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        self._began = False
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._began:  # its head goes on in the next read
            self._head = 0
        elif self._head is not None:
            self._head += len(data)
            if self._head > HEAD_LIMIT:
                self._refuse()

    def _refuse(self) -> None:
        self.logger.warning("a request's head went past %d bytes: refused (431)", HEAD_LIMIT)
        content = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"content-type: text/plain; charset=utf-8\r\n",
                        b"content-length: " + str(len(_REFUSAL)).encode() + b"\r\n",
                        b"connection: close\r\n\r\n", _REFUSAL])
        self.transport.write(b"".join(content))
        self.transport.close()
