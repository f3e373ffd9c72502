"""Chat templates: a conversation -> the prompt string a model was trained on.

Templates are rendered the way transformers renders ``tokenizer.chat_template``
(trim_blocks, lstrip_blocks, loop controls, ``raise_exception``,
``strftime_now``), but always inside jinja2's ``ImmutableSandboxedEnvironment``:
a template shipped in a model file is untrusted input. llama-cpp-python once
rendered it unsandboxed (CVE-2024-34359), which let a GGUF run code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from starchart.errors import BadRequest, StarchartError

Message = dict[str, Any]

# Put after the text of an answer to continue: the prompt is cut where the
# template wrote it, so the model goes on with the answer instead of closing
# its turn (what transformers calls ``continue_final_message``). Invisible
# separators around a name nothing else writes.
CONTINUE_MARK = "\u2063starchart-continue\u2063"


def open_final_message(messages: Sequence[Message]) -> list[Message]:
    """``messages`` with the final one's text followed by ``CONTINUE_MARK``."""
    *earlier, final = messages
    return [*earlier, {**final, "content": f"{final['content']}{CONTINUE_MARK}"}]


def cut_at_continue_mark(rendered: str) -> str:
    """The rendered prompt up to the mark: it ends inside the final answer."""
    at = rendered.rfind(CONTINUE_MARK)
    if at < 0:
        raise BadRequest("this model's chat template rewrites an answer's text, so the"
                         " answer cannot be continued", param="continue")
    return rendered[:at]


class TemplateError(StarchartError):
    """The model's chat template is broken or tried something the sandbox forbids."""

    code = "chat_template_error"


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@dataclass(frozen=True)
class ChatTemplate:
    """A jinja chat template plus the special tokens it refers to.

    ``stop_strings`` are the texts that end an assistant turn (the EOS token and
    any end-of-turn marker): generation stops on them and they are never shown.
    """

    source: str
    bos_token: str = ""
    eos_token: str = ""
    stop_strings: tuple[str, ...] = field(default=())

    @cached_property
    def _compiled(self) -> jinja2.Template:
        try:
            return _environment().from_string(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"the chat template does not parse: {exc}") from None

    @cached_property
    def takes_tools(self) -> bool:
        """Whether the template offers tools its own way (it reads a ``tools`` variable).

        Such a template also renders tool calls and tool results itself; any
        other gets the generic tool prompt (``structured.tools``).
        """
        try:
            parsed = _environment().parse(self.source)
        except jinja2.TemplateSyntaxError:
            return False
        return "tools" in meta.find_undeclared_variables(parsed)

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
               tools: Sequence[dict[str, Any]] | None = None) -> str:
        """Render ``messages``; a template's own ``raise_exception`` becomes a 400.

        ``tools`` (OpenAI tool definitions) reach the template as ``tools``, the
        way transformers' ``apply_chat_template`` passes them.
        """
        try:
            return self._compiled.render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                tools=list(tools) if tools else None,
            )
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError(
                f"the chat template tried an unsafe operation and was stopped: {exc}"
            ) from None
        except jinja2.exceptions.TemplateError as exc:
            # The template rejected this conversation (e.g. roles must alternate).
            raise BadRequest(f"the model's chat template rejected the messages: {exc}",
                             param="messages") from None
        except Exception as exc:  # noqa: BLE001 - any other failure is the template's
            raise TemplateError(f"the chat template failed: {type(exc).__name__}: {exc}") from None

    def check(self) -> None:
        """Render a probe conversation; raises ``TemplateError`` if the template is unusable.

        Called at model load so a broken or hostile template is refused up front.
        """
        try:
            self.render(
                [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "u"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "u"},
                ]
            )
        except BadRequest:
            # Some templates reject a system turn; the user-only probe must still work.
            self.render([{"role": "user", "content": "u"}])
