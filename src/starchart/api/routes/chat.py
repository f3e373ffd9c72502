"""POST /v1/chat/completions"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from starchart.api.protocol import (
    ChatCompletionRequest,
    NamedToolChoice,
    chat_chunk,
    new_id,
    now,
    usage_chunk,
)
from starchart.api.streaming import cancel_on_disconnect, sse_response
from starchart.engines.base import Finish, StreamEvent, TextDelta
from starchart.errors import BadRequest
from starchart.structured.request import StructuredRequest, plan
from starchart.structured.tools import (
    ForcedCallReader,
    Tool,
    ToolCallDelta,
    could_be_call,
    deltas_from_calls,
    parse_tool_calls,
)

router = APIRouter()


def _chunk(id_: str, created: int, model: str, text: str | None, finish: str | None,
           include_usage: bool) -> dict[str, Any]:
    delta = {} if text is None else {"content": text}
    return chat_chunk(id_, created, model, delta, finish, include_usage)


def _role_chunk(id_: str, created: int, model: str, include_usage: bool) -> dict[str, Any]:
    return chat_chunk(id_, created, model, {"role": "assistant", "content": ""}, None,
                      include_usage)


def structured_request(body: ChatCompletionRequest) -> StructuredRequest:
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


async def with_tool_calls(events: AsyncIterator[StreamEvent], structured: StructuredRequest
                          ) -> AsyncIterator[StreamEvent | ToolCallDelta]:
    """Engine events -> content deltas or tool-call deltas; a call ends with "tool_calls".

    A forced call streams as it is generated; with ``auto`` the reply is held back
    while it may still be a call, and read as calls (or released as text) at the end.
    """
    reader = ForcedCallReader() if structured.forced_call else None
    held: list[str] = []
    holding = structured.offers_tools and not structured.forced_call  # "auto"
    made_calls = False
    async for event in events:
        if isinstance(event, TextDelta):
            if reader is not None:
                for delta in reader.feed(event.text):
                    made_calls = True
                    yield delta
            elif holding:
                held.append(event.text)
                if not could_be_call("".join(held)):
                    holding = False
                    yield TextDelta("".join(held))
                    held.clear()
            else:
                yield event
        else:
            if held:
                calls = parse_tool_calls("".join(held), structured.tools)
                if calls and event.reason == "stop":
                    made_calls = True
                    for delta in deltas_from_calls(calls):
                        yield delta
                else:
                    yield TextDelta("".join(held))
            if made_calls and event.reason == "stop":
                event = dataclasses.replace(event, reason="tool_calls")
            yield event


def _tool_call_json(delta: ToolCallDelta) -> dict[str, Any]:
    out: dict[str, Any] = {"index": delta.index, "function": {"arguments": delta.arguments}}
    if delta.name is not None:
        out.update(id=delta.id, type="function")
        out["function"]["name"] = delta.name
    return out


async def _chunks(events: AsyncIterator[StreamEvent | ToolCallDelta], *, id_: str, created: int,
                  model: str, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    yield _role_chunk(id_, created, model, include_usage)
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                delta: dict[str, Any] = {"content": event.text}
            elif isinstance(event, ToolCallDelta):
                delta = {"tool_calls": [_tool_call_json(event)]}
            else:
                yield chat_chunk(id_, created, model, {}, event.reason, include_usage)
                if include_usage:
                    yield usage_chunk(id_, created, model, "chat.completion.chunk",
                                      event.usage.as_dict())
                continue
            yield chat_chunk(id_, created, model, delta, None, include_usage)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _collect(events: AsyncIterator[StreamEvent | ToolCallDelta]
                   ) -> tuple[dict[str, Any], Finish]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    finish: Finish | None = None
    async for event in events:
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            if event.name is not None:
                calls.append({"id": event.id, "type": "function",
                              "function": {"name": event.name, "arguments": ""}})
            calls[event.index]["function"]["arguments"] += event.arguments
        else:
            finish = event
    assert finish is not None, "an engine stream always ends with Finish"
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message, finish


@router.post("/v1/chat/completions")
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Any:
    service = request.app.state.service
    engine = service.engine(body.model)
    structured = structured_request(body)
    if structured.grammar is not None and engine.structured is None:
        raise BadRequest(f"model {engine.info.id!r} cannot constrain its output (its engine or"
                         " tokenizer has no constrained decoding)",
                         param="tool_choice" if structured.forced_call else "response_format")
    params = dataclasses.replace(body.sampling(service.defaults), grammar=structured.grammar)
    events = with_tool_calls(service.stream_chat(
        body.model, structured.prepare([m.as_template_message() for m in body.messages]),
        params), structured)
    model = engine.info.id
    if body.stream:
        return sse_response(_chunks(events, id_=new_id("chatcmpl"), created=now(), model=model,
                                    include_usage=body.include_usage))
    message, finish = await cancel_on_disconnect(request, _collect(events))
    return {
        "id": new_id("chatcmpl"), "object": "chat.completion", "created": now(),
        "model": model, "system_fingerprint": None,
        "choices": [{"index": 0, "logprobs": None, "finish_reason": finish.reason,
                     "message": message}],
        "usage": finish.usage.as_dict(),
    }
