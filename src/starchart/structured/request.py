"""What one chat request asks of structured generation, checked up front.

``plan`` turns ``response_format`` / ``tools`` / ``tool_choice`` into a
``StructuredRequest``: the grammar the engine enforces (if any), the tools
offered, and how the messages are prepared. Every problem is a 400 naming
its parameter, raised before anything is generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from starchart.errors import BadRequest
from starchart.structured.grammar import Grammar, json_object_grammar, schema_grammar
from starchart.structured.tools import (
    Tool,
    call_grammar,
    checked_tools,
    generic_tool_prompt,
    history_without_tools,
    native_tool_message,
)


@dataclass(frozen=True)
class StructuredRequest:
    grammar: Grammar | None = None
    tools: list[Tool] = field(default_factory=list)
    # "none" (no tools offered), "auto", "required" or a tool's name.
    choice: str = "none"
    # parallel_tool_calls: false keeps a reply to one call.
    parallel: bool = True

    @property
    def offers_tools(self) -> bool:
        return bool(self.tools) and self.choice != "none"

    @property
    def forced_call(self) -> bool:
        return self.offers_tools and self.choice != "auto"

    def require_decoder(self, model: str, decoder: object | None) -> None:
        """A 400 when the request needs a grammar and the model's engine has no decoder."""
        if self.grammar is not None and decoder is None:
            raise BadRequest(f"model {model!r} cannot constrain its output (its engine or"
                             " tokenizer has no constrained decoding)",
                             param="tool_choice" if self.forced_call else "response_format")

    def prepare(self, messages: Sequence[dict[str, Any]], *,
                native_tools: bool = False) -> list[dict[str, Any]]:
        """The messages as the chat template gets them.

        ``native_tools``: the template takes ``tools`` (``ChatTemplate.takes_tools``)
        and renders calls and results itself; calls' arguments are given to it as
        objects, as transformers' templates expect. Otherwise tool turns become
        plain turns and the generic tool prompt joins the system turn.
        """
        if native_tools:
            return [native_tool_message(m) for m in messages]
        out = history_without_tools(messages)
        if not self.offers_tools:
            return out
        prompt = generic_tool_prompt(self.tools, self.choice)
        for message in out:
            if message.get("role") == "system":
                message["content"] = (f"{message['content']}\n\n{prompt}"
                                      if message.get("content") else prompt)
                return out
        return [{"role": "system", "content": prompt}, *out]

    def template_tools(self, native_tools: bool) -> list[dict[str, Any]] | None:
        """The ``tools`` a template that takes them renders (None: offer none)."""
        if not native_tools or not self.offers_tools:
            return None
        return [t.as_openai() for t in self.tools]


def plan(*, response_format: str | None, schema: Any, tools: Sequence[Tool] | None,
         tool_choice: str | None, parallel: bool, ignore_eos: bool) -> StructuredRequest:
    """``response_format``: "text", "json_object", "json_schema" or None; ``tool_choice``:
    "auto", "none", "required", a tool's name, or None (auto with tools, else none)."""
    tools = checked_tools(tools or [])
    if tool_choice is None:
        tool_choice = "auto" if tools else "none"
    if tool_choice not in ("auto", "none", "required"):
        if tool_choice not in {t.name for t in tools}:
            raise BadRequest(f"tool_choice names the function {tool_choice!r}, which is not"
                             " in tools", param="tool_choice")
    elif tool_choice == "required" and not tools:
        raise BadRequest("tool_choice 'required' needs at least one tool in tools",
                         param="tool_choice")
    request = StructuredRequest(tools=tools, choice=tool_choice)
    grammar: Grammar | None = None
    if request.forced_call:
        if response_format in ("json_object", "json_schema"):
            raise BadRequest("a forced tool call and a JSON response_format cannot be combined",
                             param="response_format")
        grammar = call_grammar(tools, tool_choice, parallel=parallel)
    elif response_format == "json_object":
        grammar = json_object_grammar()
    elif response_format == "json_schema":
        grammar = schema_grammar(schema, param="response_format.json_schema.schema")
    if grammar is not None and ignore_eos:
        raise BadRequest("ignore_eos cannot be combined with structured output (the answer"
                         " ends where the grammar does)", param="ignore_eos")
    return StructuredRequest(grammar, tools, tool_choice, parallel)
