"""Token ids -> text, one token at a time, for tokenizers that only decode whole sequences.

A Hugging Face tokenizer decodes a list of ids, not a token's bytes: a
character split over two byte-level tokens decodes as U+FFFD until its last
byte arrives, and a SentencePiece token's leading space depends on what came
before. So each step decodes a short window ending at the new token, with a
few tokens of context before it, and releases only the text the new token
added once it no longer ends in a half character.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the context window
        self._read = 0  # tokens before this one are already released

    def _decode(self, ids: list[int]) -> str:
        text: str = self._tokenizer.decode(ids, skip_special_tokens=True,
                                           clean_up_tokenization_spaces=False)
        return text

    def add(self, token: int) -> str:
        """The text that ``token`` completes (maybe empty while a character is incomplete)."""
        self._ids.append(token)
        before = self._decode(self._ids[self._prefix:self._read])
        now = self._decode(self._ids[self._prefix:])
        if len(now) > len(before) and not now.endswith(REPLACEMENT):
            self._prefix, self._read = self._read, len(self._ids)
            return now[len(before):]
        return ""

    def flush(self) -> str:
        """At the end: whatever was held back, minus a trailing half character."""
        before = self._decode(self._ids[self._prefix:self._read])
        now = self._decode(self._ids[self._prefix:])
        self._read = len(self._ids)
        return now[len(before):].rstrip(REPLACEMENT) if len(now) > len(before) else ""
