"""Token bytes -> safe text deltas: UTF-8 reassembly and stop strings.

Shared by every engine that decodes token by token. Two things make naive
decoding wrong: a multi-byte character (Chinese, emoji) can be split across
tokens, and a stop string can span tokens. ``TextStream`` holds back exactly
what might still turn into either, and nothing more.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in stop if s]
        self._longest = max((len(s) for s in self._stop), default=0)
        self._pending = ""  # decoded text not yet released (a stop may start in it)
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Add a token's bytes; return the text that is now safe to show.

        After a stop string is seen, ``stopped`` is True and the text before it
        is returned; the stop string and anything after it are dropped.
        """
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(data)
        if not self._stop:
            out, self._pending = self._pending, ""
            return out
        cut = min((i for s in self._stop if (i := self._pending.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self._pending = self._pending[:cut], ""
            return out
        keep = self._held_back()
        out = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep :]
        return out

    def _held_back(self) -> int:
        """Length of the longest tail of pending text that is a prefix of a stop string."""
        tail = self._pending[-(self._longest - 1) :] if self._longest > 1 else ""
        for start in range(len(tail)):
            piece = tail[start:]
            if any(s.startswith(piece) for s in self._stop):
                return len(piece)
        return 0

    def flush(self) -> str:
        """At the end of generation: release whatever was held back.

        Bytes of a character cut off by the token limit are dropped rather than
        shown as a replacement character.
        """
        if self.stopped:
            return ""
        out, self._pending = self._pending, ""
        return out
