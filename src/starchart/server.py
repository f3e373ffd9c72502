"""`starchart serve`: run the app under uvicorn."""

from __future__ import annotations

import ipaddress
import sys

import uvicorn

from starchart.api.app import create_app
from starchart.settings import Settings
from starchart.store import Store


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def exposure_refusal(settings: Settings) -> str | None:
    """Why serving would be unsafe, or None. Warns when the user insisted."""
    if is_loopback(settings.host):
        return None
    store = Store.open(settings)
    try:
        has_keys = store.keys.any_exist()
    finally:
        store.close()
    if has_keys:
        return None
    if settings.insecure_no_auth:
        print(f"starchart: WARNING: serving on {settings.host} with no API keys"
              " (--insecure-no-auth): anyone who can reach this port can use the models"
              " and read every conversation. Create a key with `starchart keys create`.",
              file=sys.stderr, flush=True)
        return None
    return (f"refusing to serve on {settings.host} without API keys: anyone who can reach"
            " this port could use it. Create a key with `starchart keys create` (clients"
            " then send 'Authorization: Bearer KEY'), bind to 127.0.0.1, or pass"
            " --insecure-no-auth to accept the risk.")


def serve(settings: Settings) -> int:
    refusal = exposure_refusal(settings)
    if refusal is not None:
        print(f"starchart: {refusal}", file=sys.stderr, flush=True)
        return 2
    app = create_app(settings)  # resolves the model now: an unknown name fails before binding
    for engine in app.state.service.engines.values():
        print(f"starchart: serving {engine.info.id} ({engine.info.path})", flush=True)
    print(f"starchart: API on http://{settings.host}:{settings.port}/v1"
          f" (web page: http://{settings.host}:{settings.port}/)", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=5, ws_max_size=settings.max_body_bytes)
    return 0
