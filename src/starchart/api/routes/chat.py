"""POST /v1/chat/completions"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from starchart.api import generation
from starchart.api.openapi import errors, streams
from starchart.api.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest

router = APIRouter()


@router.post("/v1/chat/completions", response_model=ChatCompletion,
             responses={**streams(ChatCompletionChunk), **errors(404, 503)})
async def create_chat_completion(body: ChatCompletionRequest,
                                 request: Request) -> ChatCompletion | StreamingResponse:
    service = request.app.state.service
    model = service.engine(body.model).info.id
    events = service.stream_chat(
        body.model, [m.as_template_message() for m in body.messages],
        body.sampling(service.defaults),
    )
    if body.stream:
        return generation.stream(events, generation.ChatChunks(model, body.include_usage))
    return await generation.chat_completion(request, events, model)
