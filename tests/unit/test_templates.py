from pathlib import Path

import pytest

from starchart.chat.templates import (
    ChatTemplate,
    TemplateError,
    cut_at_continue_mark,
    open_final_message,
)
from starchart.errors import BadRequest

SMOL = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging"
    " Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' +"
    " message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_renders_like_transformers() -> None:
    template = ChatTemplate(SMOL)
    out = template.render([{"role": "system", "content": ""},
                           {"role": "user", "content": "Hi"}])
    assert out == ("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                   "<|im_start|>assistant\n")


def test_a_continued_answer_is_left_open() -> None:
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, I am "}]
    out = cut_at_continue_mark(ChatTemplate(SMOL).render(open_final_message(turns)))
    assert out.endswith("<|im_start|>assistant\nHello, I am ")  # no end of turn, no new turn
    # A template that trims the text still leaves the answer open where it ended.
    trims = ChatTemplate(SMOL.replace("message['content']", "message['content'] | trim"))
    assert cut_at_continue_mark(trims.render(open_final_message(turns))).endswith(
        "assistant\nHello, I am ")
    # One that rewrites the text cannot be continued: a 400 naming the parameter.
    rewrites = ChatTemplate(SMOL.replace("message['content']", "message['content'][:3]"))
    with pytest.raises(BadRequest) as refused:
        cut_at_continue_mark(rewrites.render(open_final_message(turns)))
    assert refused.value.param == "continue"


def test_template_default_system_prompt_applies_without_system_turn() -> None:
    out = ChatTemplate(SMOL).render([{"role": "user", "content": "Hi"}])
    assert out.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


@pytest.mark.parametrize("payload", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "{% set x = messages.append({'role': 'user'}) %}{{ x }}",
    "{{ self.__init__.__globals__.__builtins__.open('MARKER', 'w') }}",
])
def test_hostile_template_fails_safely(payload: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    template = ChatTemplate(payload.replace("MARKER", str(tmp_path / "pwned")))
    with pytest.raises(TemplateError):
        template.render([{"role": "user", "content": "u"}])
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(TemplateError):
        template.check()


def test_raise_exception_is_a_bad_request() -> None:
    template = ChatTemplate(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}"
        "{% endif %}ok"
    )
    with pytest.raises(BadRequest, match="first must be user") as info:
        template.render([{"role": "assistant", "content": "x"}])
    assert info.value.param == "messages"
    template.check()  # a user-only conversation still renders


def test_syntax_error_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="does not parse"):
        ChatTemplate("{% for %}").render([])
