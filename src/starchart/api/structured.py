"""A request's ``response_format`` / ``tools`` fields -> a checked ``StructuredRequest``.

Shared by /v1/chat/completions and a conversation's turns (both carry the same
fields); every problem is a 400 naming its parameter, before anything runs.
"""

from __future__ import annotations

from starchart.api.conversation_protocol import MessageCreate
from starchart.api.protocol import ChatCompletionRequest, NamedToolChoice
from starchart.structured.request import StructuredRequest, plan
from starchart.structured.tools import Tool


def structured_request(body: ChatCompletionRequest | MessageCreate) -> StructuredRequest:
    """The request's response_format / tools, checked (400s name the parameter)."""
    fmt = body.response_format
    choice = body.tool_choice
    return plan(
        response_format=fmt.type if fmt else None,
        schema=getattr(getattr(fmt, "json_schema", None), "json_schema", None),
        tools=[Tool(t.function.name, t.function.description,
                    t.function.parameters if t.function.parameters is not None
                    else {"type": "object", "properties": {}})
               for t in body.tools or []],
        tool_choice=choice.function.name if isinstance(choice, NamedToolChoice) else choice,
        parallel=body.parallel_tool_calls, ignore_eos=body.ignore_eos)
