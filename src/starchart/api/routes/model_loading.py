"""POST /v1/models/{name}/load and /unload: the model pool (engines/pool.py) by hand."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from starchart.api.openapi import errors
from starchart.api.protocol import ModelStateChange
from starchart.services.chat import ChatService

router = APIRouter()


@router.post("/v1/models/{name}/load", response_model=ModelStateChange,
             responses=errors(404, 503))
async def load_model(name: str, request: Request) -> ModelStateChange:
    """Load a served model now (it waits for the load; an idle model may be unloaded to
    make room under --memory-budget, named in ``unloaded``)."""
    service: ChatService = request.app.state.service
    model = service.served(name).info.id
    started = time.perf_counter()
    unloaded = await service.pool.load(model)
    entry = service.pool.model(model)
    return ModelStateChange(id=model, state=entry.state, memory_bytes=entry.memory_bytes,
                            unloaded=unloaded, load_seconds=round(time.perf_counter() - started, 3))


@router.post("/v1/models/{name}/unload", response_model=ModelStateChange,
             responses=errors(404, 409))
async def unload_model(name: str, request: Request) -> ModelStateChange:
    """Unload a served model (409 while it has requests in flight). It loads again on
    its next request under --load-on-demand or --keep-alive, or with .../load."""
    service: ChatService = request.app.state.service
    model = service.served(name).info.id
    await service.pool.unload(model)
    entry = service.pool.model(model)
    return ModelStateChange(id=model, state=entry.state, memory_bytes=entry.memory_bytes)
