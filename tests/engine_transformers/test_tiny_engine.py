"""The transformers engine on the tiny scripted Llama: templates, stop tokens,
streaming, batching, cancellation. See ``tiny_model`` for what the model says."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from streams import drain, run
from tiny_model import ANSWER, LETTERS, build_tokenizer

from starchart.engines.base import SamplingParams
from starchart.engines.detokenize import IncrementalDecoder
from starchart.engines.transformers import TransformersEngine
from starchart.errors import ContextOverflow, Unavailable

GREEDY = SamplingParams(temperature=0, max_tokens=64, repetition_penalty=1.0)
CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]


def test_model_info_is_measured_at_load(tiny: TransformersEngine) -> None:
    info = tiny.info.as_dict()
    assert info["engine"] == "transformers"
    assert info["dtype"] == "float32"
    assert info["quantization"] is None
    assert info["n_ctx"] == 1024
    assert info["device"] == "cpu"
    assert info["chat_template"] == "starchat"
    params = sum(p.numel() for p in tiny._model.parameters())
    assert info["weight_bytes"] >= params * 4


def test_chat_uses_the_named_template_and_stops_on_its_end_token(tiny: TransformersEngine) -> None:
    prompt = tiny.render_chat(CHAT)
    assert prompt == "<|system|>\nbe brief<|end|>\n<|user|>\nhello<|end|>\n<|assistant|>\n"
    deltas, finish = run(drain(tiny.stream_chat(CHAT, GREEDY)))
    assert "".join(deltas) == ANSWER
    assert finish.reason == "stop"
    # One token per byte; <|end|> itself is not counted.
    assert finish.usage.completion_tokens == len(ANSWER.encode())
    assert finish.usage.prompt_tokens == len(tiny.tokenize(prompt))


def test_special_tokens_never_reach_the_user(tiny: TransformersEngine) -> None:
    # ignore_eos: the model keeps saying <|end|> after the answer; none of it is shown.
    params = GREEDY.replace(ignore_eos=True, max_tokens=20)
    deltas, finish = run(drain(tiny.stream_chat(CHAT, params)))
    assert "".join(deltas) == ANSWER
    assert finish.reason == "length"
    assert finish.usage.completion_tokens == 20


def test_streamed_deltas_never_split_a_character(tiny: TransformersEngine) -> None:
    deltas, _ = run(drain(tiny.stream_chat(CHAT, GREEDY)))
    assert all("\ufffd" not in d for d in deltas)
    # 你 is three tokens and 🙂 four, yet each arrives whole in one delta.
    assert "你" in deltas and "🙂" in deltas


def test_incremental_decoder_on_multibyte_text(tiny: TransformersEngine) -> None:
    text = "中文 text, emoji 🙂👍 and ñ"
    decoder = IncrementalDecoder(tiny._tokenizer)
    pieces = [decoder.add(t) for t in tiny._tokenizer.encode(text, add_special_tokens=False)]
    pieces.append(decoder.flush())
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text


def test_a_stop_string_cuts_the_answer(tiny: TransformersEngine) -> None:
    deltas, finish = run(drain(tiny.stream_chat(CHAT, GREEDY.replace(stop=("你",)))))
    assert "".join(deltas) == "OK "
    assert finish.reason == "stop"


def test_max_tokens_ends_with_length(tiny: TransformersEngine) -> None:
    deltas, finish = run(drain(tiny.stream_completion("a", GREEDY.replace(max_tokens=5))))
    assert "".join(deltas) == "bcdef"
    assert finish.reason == "length"


def test_concurrent_requests_share_forward_passes(tiny: TransformersEngine) -> None:
    starts = "acegikmo"
    forwards = 0

    def count(*_: object) -> None:
        nonlocal forwards
        forwards += 1

    hook = tiny._model.model.register_forward_hook(count)

    async def all_at_once() -> list[tuple[list[str], object]]:
        params = [GREEDY.replace(temperature=t) for t in (0, 0.5, 1.0, 1.5)] * 2
        return await asyncio.gather(*[drain(tiny.stream_completion(s, p))
                                      for s, p in zip(starts, params, strict=True)])

    try:
        results = run(all_at_once())
    finally:
        hook.remove()
    tokens = 0
    for start, (deltas, finish) in zip(starts, results, strict=True):
        # Each row of the batch continues its own prompt, with its own temperature.
        assert "".join(deltas) == LETTERS[LETTERS.index(start) + 1:]
        assert finish.reason == "stop"
        tokens += finish.usage.completion_tokens + 1
    # One request at a time would need a forward pass per token.
    assert forwards < tokens / 2, (forwards, tokens)


def test_a_dropped_stream_leaves_the_batch(tiny: TransformersEngine) -> None:
    forwards = 0

    def count(*_: object) -> None:
        nonlocal forwards
        forwards += 1

    async def start_then_leave() -> None:
        events = tiny.stream_completion("x", GREEDY.replace(ignore_eos=True, max_tokens=1000))
        async for _ in events:
            break
        await events.aclose()

    hook = tiny._model.model.register_forward_hook(count)
    try:
        run(start_then_leave())
        deadline = time.monotonic() + 5
        while tiny.active_requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tiny.active_requests == 0
        settled = forwards
        time.sleep(0.3)
        assert forwards == settled  # nothing runs any more
        assert forwards < 500  # ... and the 1000 tokens asked for were never made
    finally:
        hook.remove()
    # And the engine still serves.
    deltas, _ = run(drain(tiny.stream_completion("w", GREEDY)))
    assert "".join(deltas) == "xyz"


def test_a_prompt_longer_than_the_context_is_refused(tiny: TransformersEngine) -> None:
    with pytest.raises(ContextOverflow):
        tiny.stream_completion("a" * 2000, GREEDY)


def test_a_model_without_template_needs_one_named(tiny_folder: Path) -> None:
    engine = TransformersEngine(str(tiny_folder), n_ctx=64)
    # The tokenizer has StarChat's special tokens: the format is recognised.
    engine.load()
    try:
        assert engine.info.extra["chat_template"] == "starchat"
    finally:
        engine.close()


def test_no_template_and_nothing_recognisable_is_a_clear_error(tmp_path: Path,
                                                                tiny_folder: Path) -> None:
    base = tmp_path / "base-model"
    shutil.copytree(tiny_folder, base)
    # A base model's tokenizer: no chat template, no chat marker tokens.
    build_tokenizer(specials=["<s>", "</s>"]).save_pretrained(base)
    engine = TransformersEngine(str(base), n_ctx=64)
    with pytest.raises(Unavailable) as info:
        engine.load()
    assert "has no chat template" in info.value.message
    assert "--chat-template" in info.value.message and "starchat" in info.value.message
    assert not engine.loaded


def test_system_prompt_is_folded_for_a_template_without_system_slot(
        tiny_folder: Path, tmp_path: Path) -> None:
    jinja = tmp_path / "nosystem.jinja"
    jinja.write_text(
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('no system role') }}{% endif %}"
        "{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")
    engine = TransformersEngine(str(tiny_folder), n_ctx=256, chat_template=str(jinja))
    engine.load()
    try:
        assert engine.render_chat(CHAT) == "<|user|>\nbe brief\n\nhello<|end|>\n<|assistant|>\n"
        deltas, _ = run(drain(engine.stream_chat(CHAT, GREEDY)))
        assert "".join(deltas) == ANSWER
    finally:
        engine.close()
