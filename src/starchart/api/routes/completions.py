"""POST /v1/completions"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from starchart.api import generation
from starchart.api.openapi import errors, streams
from starchart.api.protocol import Completion, CompletionChunk, CompletionRequest

router = APIRouter()


@router.post("/v1/completions", response_model=Completion,
             responses={**streams(CompletionChunk), **errors(404, 503)})
async def create_completion(body: CompletionRequest,
                            request: Request) -> Completion | StreamingResponse:
    service = request.app.state.service
    model = service.engine(body.model).info.id
    events = service.stream_completion(body.model, body.text, body.sampling(service.defaults))
    if body.stream:
        return generation.stream(events, generation.CompletionChunks(model,
                                                                     body.include_usage))
    return await generation.completion(request, events, model)
