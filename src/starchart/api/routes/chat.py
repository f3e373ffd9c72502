"""POST /v1/chat/completions"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from starchart.api import generation
from starchart.api.openapi import errors, streams
from starchart.api.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    NamedToolChoice,
)
from starchart.api.relay import relay
from starchart.engines.remote import RemoteEngine
from starchart.errors import BadRequest
from starchart.structured.replies import with_tool_calls
from starchart.structured.request import StructuredRequest, plan
from starchart.structured.tools import Tool

router = APIRouter()


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


@router.post("/v1/chat/completions", response_model=ChatCompletion,
             responses={**streams(ChatCompletionChunk), **errors(400, 404, 503)})
async def create_chat_completion(body: ChatCompletionRequest,
                                 request: Request) -> ChatCompletion | StreamingResponse:
    service = request.app.state.service
    engine = service.engine(body.model)
    if isinstance(engine, RemoteEngine):  # passed through as the client sent it
        # response_format and tools too: the upstream constrains its own output.
        return await relay(request, engine, "/v1/chat/completions", service)
    structured = structured_request(body)
    if structured.grammar is not None and engine.structured is None:
        raise BadRequest(f"model {engine.info.id!r} cannot constrain its output (its engine or"
                         " tokenizer has no constrained decoding)",
                         param="tool_choice" if structured.forced_call else "response_format")
    params = body.sampling(service.defaults).replace(grammar=structured.grammar)
    events = with_tool_calls(service.stream_chat(
        body.model, structured.prepare([m.as_template_message() for m in body.messages]),
        params), structured)
    model = engine.info.id
    if body.stream:
        return generation.stream(events, generation.ChatChunks(model, body.include_usage))
    return await generation.chat_completion(request, events, model)
