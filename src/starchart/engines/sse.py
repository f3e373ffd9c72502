"""Server-sent events read from bytes: the ``data`` of each event, as it completes.

The relay reads every token of an upstream's answer through this, so it works on
the bytes as they arrive (no text decoding and line splitting of the whole body
first): lines end in LF, CRLF or CR, a blank line ends an event, the ``data``
lines of one event are joined with LF, and every other field (``event``, ``id``,
``retry``, ``:`` comments such as keep-alive pings) is skipped. An event without
``data`` gives nothing.
"""

from __future__ import annotations

from collections import deque


class EventParser:
    """Feed it chunks of bytes; take the completed events' data."""

    def __init__(self) -> None:
        self._buffer = b""  # the line being read
        self._skip_lf = False  # the last chunk ended in CR: an LF first in the next is its
        self._data: list[bytes] = []  # the data lines of the event being read
        self.events: deque[str] = deque()

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        # A CR at the end ends its line now, not when the next chunk shows whether an LF
        # follows: an upstream that ends lines in CR alone still gets each event at once.
        self._skip_lf = chunk.endswith(b"\r")
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, self._buffer = buffer.split(b"\n")
        for line in lines:
            self._line(line)

    def end(self) -> None:
        """The body ended: an event still open (no blank line after it) counts."""
        if self._buffer:
            self._line(self._buffer)
        self._buffer = b""
        self._line(b"")

    def _line(self, line: bytes) -> None:
        if not line:
            if self._data:
                self.events.append(b"\n".join(self._data).decode("utf-8", "replace"))
                self._data = []
        elif line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
