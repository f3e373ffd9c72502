"""Server-sent events read from bytes: the ``data`` of each event, as it completes.

The relay reads every token of an upstream's answer through this, so it works on
the bytes as they arrive (no text decoding and line splitting of the whole body
first): lines end in LF, CRLF or CR, a blank line ends an event, the ``data``
lines of one event are joined with LF, and every other field (``event``, ``id``,
``retry``, ``:`` comments such as keep-alive pings) is skipped. An event without
``data`` gives nothing. An event whose data and open line grow past
``MAX_EVENT_BYTES`` is ``EventTooLarge``: a body that never ends its line or its
event would otherwise be kept in memory for as long as the upstream sends it.
"""

from __future__ import annotations

from collections import deque

# Far above any event of an OpenAI-style stream (one token's chunk: a few KiB even
# with logprobs), far below what would hurt the server.
MAX_EVENT_BYTES = 8 * 2**20


class EventTooLarge(ValueError):
    pass


class EventParser:
    """Feed it chunks of bytes; take the completed events' data."""

    def __init__(self) -> None:
        # The line being read, in the pieces it came in: joined once, when it ends
        # (joined at every chunk, a long line would be copied over and over).
        self._buffer: list[bytes] = []
        self._open = 0  # its length
        self._skip_lf = False  # the last chunk ended in CR: an LF first in the next is its
        self._data: list[bytes] = []  # the data lines of the event being read
        self._size = 0  # their length
        self.events: deque[str] = deque()

    def feed(self, chunk: bytes) -> None:
        """Read a chunk; ``EventTooLarge`` once the event being read is too large (the
        events completed before it are in ``events``)."""
        if not chunk:
            return
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        # A CR at the end ends its line now, not when the next chunk shows whether an LF
        # follows: an upstream that ends lines in CR alone still gets each event at once.
        self._skip_lf = chunk.endswith(b"\r")
        if b"\r" in chunk:  # (no piece kept holds a CR: each chunk's were replaced)
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, rest = chunk.split(b"\n")
        if lines and self._buffer:
            lines[0] = b"".join((*self._buffer, lines[0]))
            self._buffer, self._open = [], 0
        for line in lines:
            self._line(line)
        if rest:
            self._buffer.append(rest)
            self._open += len(rest)
        if self._size + self._open > MAX_EVENT_BYTES:
            self._buffer, self._open, self._data, self._size = [], 0, [], 0
            raise EventTooLarge(f"an event larger than {MAX_EVENT_BYTES >> 20} MiB")

    def end(self) -> None:
        """The body ended: an event still open (no blank line after it) counts."""
        if self._buffer:
            self._line(b"".join(self._buffer))
        self._buffer, self._open = [], 0
        self._line(b"")

    def _line(self, line: bytes) -> None:
        if not line:
            if self._data:
                self.events.append(b"\n".join(self._data).decode("utf-8", "replace"))
                self._data, self._size = [], 0
        elif line.startswith(b"data:"):
            value = line[5:]
            value = value[1:] if value.startswith(b" ") else value
            self._data.append(value)
            self._size += len(value) + 1  # (the LF that will join it to the next)
