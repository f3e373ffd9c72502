"""POST /v1/completions"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from starchart.api import generation
from starchart.api.protocol import CompletionRequest, completion_chunk, new_id, now
from starchart.api.relay import relay
from starchart.engines.remote import RemoteEngine

router = APIRouter()


def _chunk(id_: str, created: int, model: str, text: str | None, finish: str | None,
           include_usage: bool) -> dict[str, Any]:
    return completion_chunk(id_, created, model, text or "", finish, include_usage)


@router.post("/v1/completions")
async def create_completion(body: CompletionRequest, request: Request) -> Any:
    service = request.app.state.service
    engine = service.engine(body.model)
    if isinstance(engine, RemoteEngine):  # passed through as the client sent it
        return await relay(request, engine, "/v1/completions", service.stats)
    events = service.stream_completion(body.model, body.text, body.sampling(service.defaults))
    model = engine.info.id
    if body.stream:
        return generation.stream(events, prefix="cmpl", model=model, make=_chunk,
                                 object_name="text_completion",
                                 include_usage=body.include_usage)
    reply = await generation.complete(request, events)
    return {
        "id": new_id("cmpl"), "object": "text_completion", "created": now(), "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "text": reply.text, "logprobs": None,
                     "finish_reason": reply.finish.reason}],
        "usage": reply.finish.usage.as_dict(),
    }
