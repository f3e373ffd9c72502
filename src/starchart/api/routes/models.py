"""GET /v1/models, /v1/defaults, /v1/stats, /health, /ready"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from starchart.api.protocol import (
    GenerationDefaults,
    Health,
    ModelCard,
    ModelList,
    Readiness,
    SequenceStats,
    ServerStats,
)
from starchart.engines.pool import describe
from starchart.engines.remote import RemoteEngine
from starchart.services.chat import ChatService
from starchart.services.clip import ClipService

router = APIRouter()


def _service(request: Request) -> ChatService:
    service: ChatService = request.app.state.service
    return service


def _clip(request: Request) -> ClipService:
    clip: ClipService = request.app.state.clip
    return clip


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    pool = _service(request).pool
    chat = [ModelCard(kind="chat", loaded=entry.engine.loaded, **entry.engine.info.as_dict(),
                      **describe(entry),
                      **({"upstreams": [u.as_dict() for u in entry.engine.upstreams]}
                         if isinstance(entry.engine, RemoteEngine) else {}))
            for entry in pool.models.values()]
    clip = [ModelCard.model_validate(row) for row in _clip(request).model_entries()]
    return ModelList(data=chat + clip)


@router.get("/v1/defaults", response_model=GenerationDefaults)
async def generation_defaults(request: Request) -> GenerationDefaults:
    """The server's default generation parameters (the web page's "reset" uses these)."""
    service = _service(request)
    return GenerationDefaults(**service.defaults.as_dict(),
                              system_prompt=service.settings.system_prompt)


@router.get("/v1/stats", response_model=ServerStats)
async def stats(request: Request) -> ServerStats:
    service = _service(request)
    models = {name: SequenceStats(**s) for name, engine in service.engines.items()
              if (s := engine.batch_stats())}
    return ServerStats(**service.stats.as_dict(), models=models)


@router.get("/health", response_model=Health)
async def health() -> Health:
    """Liveness: the process answers."""
    return Health()


@router.get("/ready", response_model=Readiness, response_model_exclude_unset=True,
            responses={503: {"model": Readiness,
                             "description": "A model is still loading, or failed to load"}})
async def ready(request: Request) -> Response:
    """Readiness: every configured model, chat and CLIP, can answer without waiting for
    start-up: it is loaded, or (--load-on-demand, --keep-alive) it loads on its first
    request. A model whose load failed makes it 503 "error" (the others keep serving)."""
    service, clip = _service(request), _clip(request)
    pool = service.pool
    models = {name: entry.engine.loaded for name, entry in pool.models.items()}
    usable = {name: loaded or (pool.policy.on_demand and pool.model(name).state != "failed")
              for name, loaded in models.items()}
    models.update(clip.loaded())
    usable.update(clip.loaded())
    ok = bool(usable) and all(usable.values())
    body = Readiness(status="ready" if ok else "loading", models=models)
    failed = [f"{e.name}: {e.error}" for e in pool.models.values() if e.state == "failed"]
    error = "; ".join(failed) or clip.load_error
    if error:
        body.status, body.error = "error", error
    return JSONResponse(body.model_dump(mode="json", exclude_unset=True),
                        status_code=200 if ok else 503)
