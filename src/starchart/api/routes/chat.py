"""POST /v1/chat/completions"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from starchart.api import generation
from starchart.api.openapi import errors, streams
from starchart.api.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
)
from starchart.api.relay import relay
from starchart.api.structured import structured_request
from starchart.engines.remote import RemoteEngine
from starchart.services.chat import ChatService
from starchart.structured.replies import with_tool_calls

router = APIRouter()


@router.post("/v1/chat/completions", response_model=ChatCompletion,
             responses={**streams(ChatCompletionChunk), **errors(400, 404, 503)})
async def create_chat_completion(body: ChatCompletionRequest,
                                 request: Request) -> ChatCompletion | Response:
    service: ChatService = request.app.state.service
    engine = await service.ready(body.model)  # loads it first on demand
    if isinstance(engine, RemoteEngine):  # passed through as the client sent it
        # response_format and tools too: the upstream constrains its own output.
        return await relay(request, engine, "/v1/chat/completions", service)
    body.check_supported()
    structured = structured_request(body)
    structured.require_decoder(engine.info.id, engine.structured)
    params = body.sampling(service.defaults).replace(grammar=structured.grammar)
    native = engine.takes_tools
    messages = [m.as_template_message() for m in body.messages]
    events = with_tool_calls(service.stream_chat(
        body.model, structured.prepare(messages, native_tools=native), params,
        structured.template_tools(native)), structured)
    model = engine.info.id
    if body.stream:
        return generation.stream(events, generation.ChatChunks(model, body.include_usage))
    return await generation.chat_completion(request, events, model, logprobs=body.logprobs)
