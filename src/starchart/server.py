"""`starchart serve`: run the app under uvicorn."""

from __future__ import annotations

import uvicorn

from starchart.api.app import create_app
from starchart.settings import Settings


def serve(settings: Settings) -> int:
    app = create_app(settings)  # resolves the model now: an unknown name fails before binding
    engine = next(iter(app.state.service.engines.values()))
    print(f"starchart: serving {engine.info.id} ({engine.info.path})", flush=True)
    print(f"starchart: API on http://{settings.host}:{settings.port}/v1"
          f" (web page: http://{settings.host}:{settings.port}/)", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=5)
    return 0
