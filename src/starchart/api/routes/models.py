"""GET /v1/models, /health, /ready"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from starchart.api.routes import clip
from starchart.service import ChatService

router = APIRouter()


def _service(request: Request) -> ChatService:
    return request.app.state.service


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    service = _service(request)
    return {
        "object": "list",
        "data": [
            {"id": engine.info.id, "object": "model", "created": 0, "owned_by": "starchart",
             "kind": "chat", "loaded": engine.loaded, **engine.info.as_dict()}
            for engine in service.engines.values()
        ] + clip.model_entries(request),
    }


@router.get("/v1/defaults")
async def generation_defaults(request: Request) -> dict[str, Any]:
    """The server's default generation parameters (the web page's "reset" uses these)."""
    service = _service(request)
    return {**service.defaults.as_dict(), "system_prompt": service.settings.system_prompt}


@router.get("/v1/stats")
async def stats(request: Request) -> dict[str, Any]:
    service = _service(request)
    return {**service.stats.as_dict(),
            "models": {name: engine.batch_stats() for name, engine in service.engines.items()}}


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Readiness: every model is loaded."""
    service = _service(request)
    models = {name: engine.loaded for name, engine in service.engines.items()}
    ok = bool(models) and all(models.values())
    body: dict[str, Any] = {"status": "ready" if ok else "loading", "models": models}
    if service.load_error:
        body.update(status="error", error=service.load_error)
    return JSONResponse(body, status_code=200 if ok else 503)
