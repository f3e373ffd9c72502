"""POST /v1/chat/completions"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from starchart.api import generation
from starchart.api.protocol import ChatCompletionRequest, chat_chunk, new_id, now
from starchart.api.relay import relay
from starchart.engines.remote import RemoteEngine

router = APIRouter()


def _chunk(id_: str, created: int, model: str, text: str | None, finish: str | None,
           include_usage: bool) -> dict[str, Any]:
    delta = {} if text is None else {"content": text}
    return chat_chunk(id_, created, model, delta, finish, include_usage)


def _role_chunk(id_: str, created: int, model: str, include_usage: bool) -> dict[str, Any]:
    return chat_chunk(id_, created, model, {"role": "assistant", "content": ""}, None,
                      include_usage)


@router.post("/v1/chat/completions")
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Any:
    service = request.app.state.service
    engine = service.engine(body.model)
    if isinstance(engine, RemoteEngine):  # passed through as the client sent it
        return await relay(request, engine, "/v1/chat/completions", service.stats)
    events = service.stream_chat(
        body.model, [m.as_template_message() for m in body.messages],
        body.sampling(service.defaults),
    )
    model = engine.info.id
    if body.stream:
        return generation.stream(events, prefix="chatcmpl", model=model, make=_chunk,
                                 object_name="chat.completion.chunk",
                                 include_usage=body.include_usage, first=_role_chunk)
    reply = await generation.complete(request, events)
    return {
        "id": new_id("chatcmpl"), "object": "chat.completion", "created": now(),
        "model": model, "system_fingerprint": None,
        "choices": [{"index": 0, "logprobs": None, "finish_reason": reply.finish.reason,
                     "message": {"role": "assistant", "content": reply.text}}],
        "usage": reply.finish.usage.as_dict(),
    }
