"""Per-sequence sampling for batched llama.cpp decoding.

Every sequence in a batch gets its own llama.cpp sampler chain, built from its
own ``SamplingParams``: penalties, then greedy (temperature 0) or top-k, top-p,
min-p, temperature and a draw seeded by the request. The chain keeps its state
(the penalty window, the random generator) across the sequence's tokens, so a
seeded request draws the same tokens whether it runs alone or beside others.

Why llama.cpp's chain rather than numpy on the logits row: measured on the
embedded model (49,152-token vocabulary), one token costs 0.12 ms through the
chain and 0.9 ms through numpy (softmax + partition + cumulative sum), see
README "Continuous batching".
"""

from __future__ import annotations

import ctypes
import random
from collections.abc import Sequence

import llama_cpp

from starchart.engines.base import SamplingParams

# The penalty window in tokens (llama.cpp's default ``penalty_last_n``). It covers
# the answer only: the prompt's chat-template tokens (the end-of-turn marker
# above all) must not be penalised, or answers stop ending.
PENALTY_WINDOW = 64


class SequenceSampler:
    """One sequence's sampler chain; ``close()`` frees it."""

    def __init__(self, params: SamplingParams, *, n_vocab: int, banned: Sequence[int] = ()) -> None:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self._chain = chain
        add = llama_cpp.llama_sampler_chain_add
        if banned:
            bias = (llama_cpp.llama_logit_bias * len(banned))()
            for i, token in enumerate(banned):
                bias[i].token = token
                bias[i].bias = float("-inf")
            add(chain, llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(banned), bias))
        if (params.repetition_penalty != 1.0 or params.presence_penalty
                or params.frequency_penalty):
            add(chain, llama_cpp.llama_sampler_init_penalties(
                n_vocab, PENALTY_WINDOW, params.repetition_penalty, params.frequency_penalty,
                params.presence_penalty))
        if params.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            add(chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0:
            add(chain, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
        seed = params.seed if params.seed is not None else random.getrandbits(32)
        add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx: ctypes.c_void_p, index: int) -> int:
        """Draw (and accept) a token from output ``index`` of the last decode."""
        return llama_cpp.llama_sampler_sample(self._chain, ctx, index)

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
