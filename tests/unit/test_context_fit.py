"""Fitting a long conversation into the context window (the real model's tokenizer)."""

from __future__ import annotations

import pytest

from starchart.errors import ContextOverflow
from starchart.services.context import fit, reply_reserve

SYSTEM = {"role": "system", "content": "You are terse."}


def exchanges(n: int, words: int = 40) -> list[dict[str, str]]:
    out = []
    for i in range(n):
        out.append({"role": "user", "content": f"question {i} " + "word " * words})
        out.append({"role": "assistant", "content": f"answer {i} " + "word " * words})
    return out


def test_short_history_is_kept_whole(engine) -> None:
    history = [*exchanges(2), {"role": "user", "content": "last"}]
    fitted = fit(engine, SYSTEM, history, max_tokens=64)
    assert fitted.dropped == 0 and fitted.messages == [SYSTEM, *history]


def test_oldest_exchanges_go_first_and_the_system_prompt_stays(engine) -> None:
    n_ctx = engine.info.n_ctx
    history = [*exchanges(60), {"role": "user", "content": "the newest question"}]
    fitted = fit(engine, SYSTEM, history, max_tokens=256)
    assert fitted.dropped > 0 and fitted.dropped % 2 == 0  # whole exchanges
    assert fitted.messages[0] == SYSTEM
    assert fitted.messages[1:] == history[fitted.dropped:]
    assert fitted.messages[1]["role"] == "user"
    assert fitted.prompt_tokens + reply_reserve(n_ctx, 256) <= n_ctx
    # As much history as fits is kept: one more exchange would not fit.
    longer = [SYSTEM, *history[fitted.dropped - 2:]]
    assert len(engine.tokenize(engine.render_chat(longer))) + 256 > n_ctx


def test_a_single_message_larger_than_the_context_is_a_400(engine) -> None:
    history = [*exchanges(2), {"role": "user", "content": "word " * 5000}]
    with pytest.raises(ContextOverflow) as caught:
        fit(engine, SYSTEM, history, max_tokens=64)
    assert caught.value.status == 400 and caught.value.param == "content"


def test_a_big_last_message_still_runs_with_less_room_to_reply(engine) -> None:
    # Over n_ctx - reserve but under n_ctx: sent alone, not refused.
    history = [*exchanges(2), {"role": "user", "content": "word " * 1500}]
    fitted = fit(engine, SYSTEM, history, max_tokens=1024)
    assert fitted.dropped == 4 and fitted.prompt_tokens < engine.info.n_ctx
