"""Log probabilities inside transformers' continuous batching (``logprobs`` requests).

CB's own ``return_logprobs`` gives the probability of the drawn token after every
processor, ours included (``batch_sampling.Pick`` leaves one finite logit, so
it would always say 0). ``Distributions`` runs first instead, on the model's
raw logits, and keeps each asking request's log-softmax row until the engine
sees which token was drawn from it (``take``, in order). Only requests that
asked pay for this: a vocabulary-sized row per token until it is read.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
)

KWARG = "logprobs"


class Distributions(ContinuousBatchingLogitsProcessor):
    supported_kwargs: dict[str, type] = {KWARG: bool}  # noqa: RUF012 - the base declares it per instance
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._rows: list[str | None] = []
        self._pending: dict[str, deque[np.ndarray]] = {}
        self._lock = threading.Lock()

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(0)

    def prepare_tensor_args(self, requests_with_new_token: list[Any]) -> torch.Tensor:
        self._rows = [future.state.request_id
                      if future.state.logit_processor_kwargs.get(KWARG) else None
                      for future in requests_with_new_token]
        return torch.zeros(len(self._rows), dtype=torch.int32)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        for i, request_id in enumerate(self._rows[: scores.size(0)]):
            if request_id is not None:
                row = torch.log_softmax(scores[i].float(), dim=-1).cpu().numpy()
                with self._lock:
                    self._pending.setdefault(request_id, deque()).append(row)
        return scores

    def take(self, request_id: str) -> np.ndarray | None:
        """The distribution the request's next generated token was drawn from."""
        with self._lock:
            rows = self._pending.get(request_id)
            return rows.popleft() if rows else None

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._pending.pop(request_id, None)


def install(manager: Any) -> Distributions:
    """Put ``Distributions`` first in a CB manager's processors (before ``manager.start()``)."""
    processors = manager.logit_processor
    distributions = Distributions()
    processors.logits_processor.insert(0, distributions)
    processors.tensors_required += 1
    processors.supported_keys.update(Distributions.supported_kwargs)
    processors.do_processing = True
    return distributions


def _byte_symbols() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's table) -> the byte."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in kept]
    table = {chr(b): b for b in kept}
    table.update({chr(256 + i): b for i, b in enumerate(moved)})
    return table


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def token_bytes(tokenizer: Any) -> Callable[[int], bytes]:
    """A token id -> its bytes (a token may hold part of a UTF-8 character).

    Byte-level BPE (GPT-2, Llama 3, SmolLM) spells bytes with stand-in characters;
    SentencePiece writes a byte as ``<0xE4>`` and a space as ``▁``.
    """
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    byte_level = type(decoder).__name__ == "ByteLevel"
    symbols = _byte_symbols()
    cache: dict[int, bytes] = {}

    def piece(token: int) -> bytes:
        found = cache.get(token)
        if found is None:
            text = str(tokenizer.convert_ids_to_tokens(token))
            byte = _BYTE_TOKEN.fullmatch(text)
            if byte_level and all(c in symbols for c in text):
                found = bytes(symbols[c] for c in text)
            elif byte:
                found = bytes([int(byte.group(1), 16)])
            elif "\u2581" in text:
                found = text.replace("\u2581", " ").encode("utf-8")
            else:
                found = tokenizer.decode([token]).encode("utf-8")
            cache[token] = found
        return found

    return piece
