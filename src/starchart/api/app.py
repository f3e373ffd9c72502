"""create_app(settings) -> FastAPI. Nothing happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from starchart import __version__
from starchart.api.auth import AccessGuard, split_setting
from starchart.api.bodies import JsonBodies
from starchart.api.conversation_protocol import ConversationChunk
from starchart.api.errors import BodySizeLimit, install_error_handlers
from starchart.api.openapi import describe
from starchart.api.polls import MarkPolls
from starchart.api.protocol import ChatCompletionChunk, CompletionChunk
from starchart.api.ratelimit import RateLimiter
from starchart.api.relay_order import RelayOrder
from starchart.api.routes import (
    chat,
    completions,
    conversation_messages,
    conversations,
    doctor,
    metrics,
    model_loading,
    models,
)
from starchart.api.routes import clip as clip_routes
from starchart.api.shutdown import Drain, DrainMiddleware
from starchart.api.slow_clients import SendTimeout
from starchart.api.web import mount_web
from starchart.engines import create_engines
from starchart.engines.base import Engine
from starchart.engines.pool import PoolPolicy
from starchart.engines.remote import remote_engines
from starchart.metrics import MetricsMiddleware, ServerMetrics
from starchart.services.chat import ChatService
from starchart.services.clip import ClipService
from starchart.services.conversations import ConversationChat
from starchart.settings import Settings
from starchart.store import Store
from starchart.vision.clip import ClipModel

log = logging.getLogger("starchart")


def _images_encoded(clip: ClipModel | None) -> tuple[str, int] | None:
    """(CLIP model id, images its batcher has encoded), once it is loaded."""
    if clip is None or clip.images is None:
        return None
    return clip.info.id, clip.images.stats.items


def create_app(settings: Settings, engines: list[Engine] | None = None) -> FastAPI:
    """Build the app. ``engines`` lets a caller share already-loaded engines
    (the terminal chat, tests); by default those of ``settings`` (every --model)
    are built here and loaded in the background at start-up (or on demand: the
    pool, ``engines/pool.py``). Engines passed in stay owned by the caller and are
    not closed at shutdown.
    """
    owned = engines is None
    # Models from upstream servers (--upstream, --models-file) are always the app's own.
    remote = remote_engines(settings)
    local = create_engines(settings) if engines is None else engines
    chosen = [*local, *remote]
    server_metrics = ServerMetrics()
    service = ChatService(settings, {e.info.id: e for e in chosen}, metrics=server_metrics,
                          policy=PoolPolicy.from_settings(settings, len(local)))
    pool = service.pool
    clip = ClipService.from_settings(settings, service)
    store = Store.open(settings)
    conversation_chat = ConversationChat(service, store.conversations)
    server_metrics.watch(
        lambda: service.engines,
        clip_images=lambda: _images_encoded(clip.clip),
        conversations=store.conversations.count)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(pool.start())
        expiring = asyncio.create_task(pool.expire_idle())
        background = [asyncio.create_task(e.serve_background()) for e in chosen]
        clip_loading = asyncio.create_task(clip.load())
        try:
            yield
        finally:
            loading.cancel()
            expiring.cancel()
            pool.close()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            clip_loading.cancel()
            clip.close()
            # Replies still being generated store what they have.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conversation_chat.drain(), timeout=5)
            store.close()
            for engine in service.engines.values() if owned else remote:
                engine.close()

    app = FastAPI(title="starchart", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.service = service
    app.state.clip = clip
    app.state.store = store
    app.state.conversation_chat = conversation_chat
    app.state.metrics = server_metrics
    app.state.drain = drain = Drain(settings.shutdown_timeout)  # started by server.py on SIGTERM
    install_error_handlers(app)
    # Innermost: requests for upstream models go upstream in the order they came.
    app.add_middleware(RelayOrder, remote=[e.info.id for e in remote])
    # Only a request every other layer let through can be a quiet poll.
    app.add_middleware(MarkPolls)
    app.add_middleware(JsonBodies)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    if settings.rate_limit_requests or settings.rate_limit_tokens:  # inside: knows the key
        app.add_middleware(RateLimiter, requests=settings.rate_limit_requests,
                           tokens=settings.rate_limit_tokens)
    # Added after (so outside) the body limit: no key, no body read.
    app.add_middleware(AccessGuard, settings=settings, keys=store.keys)
    if settings.cors_origins:  # outermost, so preflights and 401s carry CORS headers
        app.add_middleware(CORSMiddleware, allow_origins=split_setting(settings.cors_origins),
                           allow_methods=["*"], allow_headers=["*"])
    # Outside the guard (a request refused while draining needs no key), inside the counting.
    app.add_middleware(DrainMiddleware, drain=drain)
    # Outside the drain: it sees uvicorn's own receive, and so the connection.
    app.add_middleware(SendTimeout, timeout=settings.send_timeout)
    # Outermost: every answer is counted, refusals (401, 400 bad Host) included.
    app.add_middleware(MetricsMiddleware, metrics=server_metrics)
    for module in (chat, completions, models, model_loading, doctor, clip_routes, conversations,
                   conversation_messages, metrics):
        app.include_router(module.router)
    describe(app, chunks=(ChatCompletionChunk, CompletionChunk, ConversationChunk))
    mount_web(app)
    return app
