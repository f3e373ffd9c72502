"""GET /v1/doctor: the environment checks (and optionally a memory plan) as JSON.

The checks run off the event loop (they start subprocesses and may import
torch) and the answer is cached briefly: a status page polling it must not
re-run nvidia-smi every second.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Query, Request

from starchart.api.openapi import errors
from starchart.errors import BadRequest, NotFound
from starchart.registry import known_names, resolve_name

router = APIRouter()
CACHE_SECONDS = 30.0


@dataclass
class DoctorCache:
    entries: dict[tuple[str | None, int, int], tuple[float, dict[str, Any]]] = field(
        default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _cache(request: Request) -> DoctorCache:
    state = request.app.state
    if not hasattr(state, "doctor_cache"):
        state.doctor_cache = DoctorCache()
    cache: DoctorCache = state.doctor_cache
    return cache


def _plan_target(request: Request, model: str) -> str:
    """What the plan reads for ``model``: a served model's files, else any name
    ``doctor --model`` takes (``registry.resolve_name``: a file gone is a 404 saying
    so). Plans over HTTP are for names, never arbitrary paths on the server's disk."""
    engines = request.app.state.service.engines
    if model in engines:
        info = engines[model].info
        if info.engine == "remote":  # its memory is on other machines
            raise BadRequest(f"model {model!r} runs on its upstream servers ({info.path}),"
                             " not on this machine: plan its memory where it runs",
                             param="model")
        return str(info.path)
    home = request.app.state.settings.home
    if resolve_name(model, home) is not None:
        return model  # the plan reads it by name, as `doctor --model` does
    served = ", ".join(engines) or "none"
    names = ", ".join(known_names(home))
    raise NotFound(f"model {model!r} is neither served here ({served}) nor a model name"
                   f" ({names}; `starchart models add` / `models pull` name more)",
                   param="model", code="model_not_found")


@router.get("/v1/doctor", responses=errors(404))
async def doctor(
    request: Request,
    model: str | None = Query(None, description="also plan this model's memory"),
    n_ctx: int | None = Query(None, description="context for the plan's KV cache"),
    batch: int = Query(1, description="sequences at once, for the plan"),
) -> dict[str, Any]:
    from starchart.doctor.run import run_checks

    # Range checks here rather than Query(ge=...): the error then names the bare
    # parameter ("batch"), as every other 4xx does.
    for name, value in (("n_ctx", n_ctx), ("batch", batch)):
        if value is not None and value < 1:
            raise BadRequest(f"{name} must be at least 1, got {value}", param=name)
    settings = request.app.state.settings
    target = _plan_target(request, model) if model else None
    ctx = n_ctx or settings.n_ctx
    key = (target, ctx, batch)
    cache = _cache(request)
    async with cache.lock:
        hit = cache.entries.get(key)
        if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
        report = await asyncio.to_thread(run_checks, settings.home, model=target, n_ctx=ctx,
                                         batch=batch)
        body = report.as_dict()
        cache.entries[key] = (time.monotonic(), body)
        return body
