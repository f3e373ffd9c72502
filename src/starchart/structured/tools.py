"""Tool (function) calls: offering tools, forcing a call, reading calls back.

A call is written as ``{"name": "<tool>", "arguments": {...}}`` -- several calls
(``parallel_tool_calls``) as a JSON array of those. With ``tool_choice``
``required`` or a named function that text is forced by a grammar, so the call
is always well formed and its arguments match the tool's parameters schema.
With ``auto`` the model decides: a chat template that takes ``tools`` offers
them its own way; any other template gets ``generic_tool_prompt`` as a system
message. The reply is then read for calls in that JSON form or in the
``<tool_call>...</tool_call>`` blocks tool-trained templates ask for.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starchart.errors import BadRequest
from starchart.structured.grammar import JSON_STYLE, Grammar, check_schema, schema_grammar

# "auto", "none", "required" or the name of one tool.
ToolChoice = str

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
# Forced text before a call's arguments; names are [A-Za-z0-9_-], no escaping needed.
_CALL_HEAD = re.compile(r'\s*\{"name": "([A-Za-z0-9_-]+)", "arguments": ')


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]

    def as_openai(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name,
                                                 "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    def as_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed call: first its id and name, then its arguments in pieces."""

    index: int
    arguments: str
    id: str | None = None
    name: str | None = None


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def checked_tools(tools: Sequence[Tool]) -> list[Tool]:
    """Each tool's parameters must be a valid JSON schema (400 naming the tool)."""
    for i, tool in enumerate(tools):
        check_schema(tool.parameters, param=f"tools[{i}].function.parameters")
    names = [t.name for t in tools]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise BadRequest(f"two tools are named {name!r}", param=f"tools[{i}].function.name")
    return list(tools)


def call_grammar(tools: Sequence[Tool], choice: ToolChoice, *, parallel: bool) -> Grammar:
    """The grammar of a forced call: one of ``tools`` (``required``) or the named one.

    Each tool's arguments are their own JSON schema inside a Lark grammar, so a
    schema's ``$ref``s keep pointing into that schema.
    """
    chosen = [(i, t) for i, t in enumerate(tools) if choice == "required" or t.name == choice]
    lines = []
    for i, tool in chosen:
        param = f"tools[{i}].function.parameters"
        schema_grammar(tool.parameters, param=param, source="tool_choice")  # refusals, 400s
        schema = {**tool.parameters, "x-guidance": JSON_STYLE}
        head = json.dumps(f'{{"name": "{tool.name}", "arguments": ')
        lines.append(f"call_{i}: {head} args_{i} \"}}\"")
        lines.append(f"args_{i}: %json {json.dumps(schema)}")
    calls = " | ".join(f"call_{i}" for i, _ in chosen)
    many = parallel and choice == "required"
    start = 'start: call | "[" call (", " call)* "]"' if many else "start: call"
    import llguidance

    text = llguidance.LLMatcher.grammar_from_lark("\n".join([start, f"call: {calls}", *lines]))
    error = llguidance.LLMatcher.validate_grammar(text, None)
    if error:
        raise BadRequest(f"the tools cannot be enforced: {error}", param="tools")
    return Grammar(text, "tool_choice")


def generic_tool_prompt(tools: Sequence[Tool], choice: ToolChoice) -> str:
    """Offering tools to a model whose chat template has no place for them."""
    listing = "\n".join(json.dumps({"name": t.name, "description": t.description,
                                    "parameters": t.parameters}, ensure_ascii=False)
                        for t in tools)
    text = ("You can call these tools (functions), given with their JSON schemas:\n"
            f"{listing}\n"
            'To call a tool, answer with only a JSON object {"name": <tool name>, '
            '"arguments": <an object matching its parameters>} and nothing else'
            " (several calls: a JSON array of such objects).")
    if choice == "auto":
        return text + " If no tool is needed, answer normally."
    if choice == "required":
        return text + " Call a tool now."
    return text + f" Call the tool {choice} now."


def history_without_tools(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls and results as plain turns, for templates that know no tools.

    An assistant's calls become a sentence naming them ("I called get_weather
    with {...}."); a tool result becomes a user turn ("get_weather answered:
    ..."). Measured on the embedded model: with the calls left as raw JSON in
    the history it repeats the call instead of answering from the result.
    """
    names: dict[str, str] = {}
    out = []
    for message in messages:
        if message.get("role") == "tool":
            name = names.get(message.get("tool_call_id") or "", "the tool")
            out.append({"role": "user",
                        "content": f"{name} answered: {message.get('content') or ''}"})
        elif message.get("tool_calls"):
            said = []
            for call in message["tool_calls"]:
                names[call["id"]] = call["function"]["name"]
                said.append(f"{call['function']['name']} with {call['function']['arguments']}")
            text = "I called " + " and ".join(said) + "."
            content = message.get("content") or ""
            out.append({"role": "assistant", "content": f"{content}\n{text}" if content
                        else text})
        else:
            out.append(dict(message))
    return out


def native_tool_message(message: dict[str, Any]) -> dict[str, Any]:
    """A message for a template that renders tool calls itself: each call's
    ``arguments`` as an object (templates write it with ``tojson``; OpenAI sends text)."""
    out = dict(message)
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {**call, "function": {**call["function"],
                                  "arguments": _loads(call["function"]["arguments"])}}
            for call in message["tool_calls"]]
    return out


def _loads(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def parse_tool_calls(text: str, tools: Sequence[Tool]) -> list[ToolCall]:
    """The calls a finished reply makes (none when it is a plain answer)."""
    names = {t.name for t in tools}
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    blocks = _BLOCK.findall(stripped)
    candidates: list[Any] = []
    for chunk in blocks or [stripped]:
        try:
            value = json.loads(chunk)
        except ValueError:
            return []
        candidates.extend(value if isinstance(value, list) else [value])
    calls = []
    for item in candidates:
        if not isinstance(item, dict) or item.get("name") not in names:
            return []
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            arguments = _loads(arguments)
        if not isinstance(arguments, dict):
            return []
        calls.append(ToolCall(new_call_id(), item["name"],
                              json.dumps(arguments, ensure_ascii=False)))
    return calls


class ForcedCallReader:
    """Reads forced-call text as it streams: a call's name as soon as it is
    complete, then its arguments piece by piece."""

    def __init__(self) -> None:
        self._buffer = ""  # text not yet attributed
        self._index = -1
        self._in_arguments = False
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, text: str) -> list[ToolCallDelta]:
        out: list[ToolCallDelta] = []
        self._buffer += text
        while self._buffer:
            if not self._in_arguments:
                head = _CALL_HEAD.search(self._buffer)
                if head is None:
                    break
                self._index += 1
                self._buffer = self._buffer[head.end():]
                self._in_arguments = True
                out.append(ToolCallDelta(self._index, "", new_call_id(), head.group(1)))
                continue
            end = self._scan()
            piece, self._buffer = self._buffer[:end], self._buffer[end:]
            if piece:
                out.append(ToolCallDelta(self._index, piece))
            if self._depth == 0 and not self._in_string and piece:
                self._in_arguments = False
            else:
                break
        return out

    def _scan(self) -> int:
        """How much of the buffer belongs to the current arguments object."""
        for i, char in enumerate(self._buffer):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return i + 1
        return len(self._buffer)


def could_be_call(text: str) -> bool:
    """Whether a reply starting with ``text`` may still turn out to be a tool call."""
    stripped = text.lstrip()
    return (not stripped or stripped[0] in "{[" or stripped.startswith("```")
            or stripped.startswith("<tool_call>") or "<tool_call>".startswith(stripped))


def deltas_from_calls(calls: Sequence[ToolCall]) -> list[ToolCallDelta]:
    """Whole calls as stream pieces: the name first, then the arguments."""
    out = []
    for index, call in enumerate(calls):
        out.append(ToolCallDelta(index, "", call.id, call.name))
        out.append(ToolCallDelta(index, call.arguments))
    return out
