"""Named chat templates render a known conversation to the exact published format."""

from __future__ import annotations

from pathlib import Path

import pytest

from starchart.chat import named
from starchart.chat.system_slot import fold_system, has_system_slot
from starchart.chat.templates import ChatTemplate
from starchart.errors import BadRequest

CONVERSATION = [
    {"role": "system", "content": "You are a JavaScript engineer."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Upload a file with Next.js"},
]

# Written from each format's published definition (model cards / tokenizer configs).
EXPECTED = {
    # HuggingFaceH4/starchat-alpha/-beta model cards: "<|role|>\n" headers, turns end in <|end|>.
    "starchat": (
        "<|system|>\nYou are a JavaScript engineer.<|end|>\n"
        "<|user|>\nHi!<|end|>\n"
        "<|assistant|>\nHello.<|end|>\n"
        "<|user|>\nUpload a file with Next.js<|end|>\n"
        "<|assistant|>\n"
    ),
    "chatml": (
        "<|im_start|>system\nYou are a JavaScript engineer.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\nUpload a file with Next.js<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    # meta-llama/Llama-2-*-chat: system inside the first [INST] between <<SYS>> markers.
    "llama2": (
        "<s>[INST] <<SYS>>\nYou are a JavaScript engineer.\n<</SYS>>\n\nHi! [/INST]"
        " Hello. </s>"
        "<s>[INST] Upload a file with Next.js [/INST]"
    ),
    # HuggingFaceH4/zephyr-7b-beta: StarChat's headers, turns closed by </s>.
    "zephyr": (
        "<|system|>\nYou are a JavaScript engineer.</s>\n"
        "<|user|>\nHi!</s>\n"
        "<|assistant|>\nHello.</s>\n"
        "<|user|>\nUpload a file with Next.js</s>\n"
        "<|assistant|>\n"
    ),
}


def template(name: str) -> ChatTemplate:
    chosen = named.load(name)
    return ChatTemplate(chosen.source, bos_token="<s>", eos_token="</s>",
                        stop_strings=chosen.end_of_turn)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_named_template_renders_the_published_format(name: str) -> None:
    assert template(name).render(CONVERSATION) == EXPECTED[name]


def test_every_named_template_is_tested_and_has_a_system_slot() -> None:
    assert sorted(named.names()) == sorted(EXPECTED)
    for name in named.names():
        assert has_system_slot(template(name)), name


def test_starchat_stops_on_end_and_chatml_on_im_end() -> None:
    assert named.load("starchat").end_of_turn == ("<|end|>",)
    assert named.load("chatml").end_of_turn == ("<|im_end|>",)


def test_llama2_refuses_non_alternating_roles_with_a_400() -> None:
    with pytest.raises(BadRequest) as info:
        template("llama2").render([{"role": "user", "content": "a"},
                                   {"role": "user", "content": "b"}])
    assert info.value.param == "messages"
    assert "alternate" in info.value.message


def test_a_jinja_file_is_a_template(tmp_path: Path) -> None:
    path = tmp_path / "mine.jinja"
    path.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    loaded = named.load(str(path))
    assert loaded.name == "mine"
    assert ChatTemplate(loaded.source).render(CONVERSATION[:2]) == (
        "[system] You are a JavaScript engineer.\n[user] Hi!\n")


def test_an_unknown_name_says_which_names_exist() -> None:
    with pytest.raises(BadRequest) as info:
        named.load("vicuna")
    assert info.value.param == "chat_template"
    for name in EXPECTED:
        assert name in info.value.message


def test_detect_by_special_tokens() -> None:
    assert named.detect({"<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "a"}) == "starchat"
    assert named.detect({"<|im_start|>", "<|im_end|>"}) == "chatml"
    assert named.detect({"<s>", "</s>"}) is None


def test_a_template_without_system_slot_gets_the_system_prompt_before_the_first_user_turn(
) -> None:
    # Gemma-style: refuses a system turn outright.
    refusing = ChatTemplate(
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}")
    # And one that silently drops it.
    dropping = ChatTemplate(
        "{% for m in messages if m['role'] != 'system' %}<{{ m['role'] }}>{{ m['content'] }}"
        "{% endfor %}")
    for chat in (refusing, dropping):
        assert not has_system_slot(chat)
        rendered = chat.render(fold_system(CONVERSATION))
        assert "You are a JavaScript engineer.\n\nHi!" in rendered
        assert rendered.count("You are a JavaScript engineer.") == 1
    assert fold_system([{"role": "system", "content": "S"}]) == [{"role": "user", "content": "S"}]
