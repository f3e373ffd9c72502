"""Fit a conversation into the model's context window.

When the history has outgrown the context, the oldest turns are left out of
the prompt, whole exchanges at a time (a user message and the replies after
it) so the prompt still starts with a user turn; the system prompt is always
kept. Room is left for the reply: ``min(max_tokens, n_ctx / 2)`` tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starchart.chat.templates import Message
from starchart.engines.base import Engine
from starchart.errors import ContextOverflow


@dataclass(frozen=True)
class Fitted:
    messages: list[Message]  # system prompt first, then the turns kept
    dropped: int  # messages of history left out
    prompt_tokens: int


def reply_reserve(n_ctx: int, max_tokens: int) -> int:
    return min(max_tokens, n_ctx // 2)


def fit(engine: Engine, system: Message, history: Sequence[Message],
        max_tokens: int, tools: Sequence[dict[str, Any]] | None = None, *,
        continue_final: bool = False) -> Fitted:
    """``history`` ends with the new user message, which is always kept; ``tools``
    are those the chat template renders (they take room in the prompt too).
    ``continue_final``: it ends with an answer to go on with (that exchange is kept)."""
    n_ctx = engine.info.n_ctx
    budget = n_ctx - reply_reserve(n_ctx, max_tokens)
    render = engine.render_continuation if continue_final else engine.render_chat

    def tokens(start: int) -> int:
        return len(engine.tokenize(render([system, *history[start:]], tools)))

    # Where the kept history may begin: the start, or any user turn.
    starts = sorted({0, *(i for i, m in enumerate(history) if m["role"] == "user")})
    # Leaving more out never lengthens the prompt: binary search the first start that fits.
    lo, hi = 0, len(starts) - 1
    best: tuple[int, int] | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        count = tokens(starts[mid])
        if count <= budget:
            best, hi = (starts[mid], count), mid - 1
        else:
            lo = mid + 1
    if best is None:
        # Not even the newest turn fits with room for a full reply; it may
        # still fit with a shorter one, as long as one token is left.
        last = starts[-1]
        count = tokens(last)
        if count >= n_ctx:
            raise ContextOverflow(count, n_ctx,
                                  param="continue" if continue_final else "content")
        best = (last, count)
    start, count = best
    return Fitted([system, *history[start:]], dropped=start, prompt_tokens=count)
