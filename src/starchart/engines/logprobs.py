"""Log probabilities of generated tokens, from one logits row (any engine).

OpenAI's ``logprobs`` are the model's own distribution at each position: the
log-softmax of the raw logits, before temperature, penalties or top-k/top-p
change what is drawn. ``distribution`` is taken before the sampler runs (a
grammar writes its mask into the same row); ``entry`` once the token is known.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from starchart.engines.base import TokenLogprob


def distribution(logits: np.ndarray) -> np.ndarray:
    """log-softmax of one row, as float32 (a copy: the row may change after this)."""
    row = np.asarray(logits, dtype=np.float32)
    shifted = row - np.max(row)
    logprobs: np.ndarray = shifted - np.log(np.sum(np.exp(shifted)))
    return logprobs


def entry(logprobs: np.ndarray, token: int, top: int, piece: Callable[[int], bytes]
          ) -> TokenLogprob:
    """``token``'s entry, with the ``top`` most likely tokens, most likely first."""
    best: tuple[tuple[bytes, float], ...] = ()
    if top > 0:
        ids = np.argpartition(logprobs, -top)[-top:]
        ids = ids[np.argsort(logprobs[ids])[::-1]]
        best = tuple((piece(int(i)), float(logprobs[i])) for i in ids)
    return TokenLogprob(piece(token), float(logprobs[token]), best)
