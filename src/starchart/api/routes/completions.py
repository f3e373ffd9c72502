"""POST /v1/completions"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from starchart.api import generation
from starchart.api.openapi import errors, streams
from starchart.api.protocol import Completion, CompletionChunk, CompletionRequest
from starchart.api.relay import relay
from starchart.engines.remote import RemoteEngine
from starchart.services.chat import ChatService

router = APIRouter()


@router.post("/v1/completions", response_model=Completion,
             responses={**streams(CompletionChunk), **errors(400, 404, 503)})
async def create_completion(body: CompletionRequest,
                            request: Request) -> Completion | Response:
    service: ChatService = request.app.state.service
    engine = await service.ready(body.model)  # loads it first on demand
    if isinstance(engine, RemoteEngine):  # passed through as the client sent it
        return await relay(request, engine, "/v1/completions", service)
    body.check_supported()
    model = engine.info.id
    events = service.stream_completion(body.model, body.text, body.sampling(service.defaults))
    if body.stream:
        return generation.stream(events, generation.CompletionChunks(model,
                                                                     body.include_usage))
    return await generation.completion(request, events, model,
                                       logprobs=body.logprobs is not None)
