"""`starchart serve`: run the app under uvicorn."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import signal
import sys
from types import FrameType

import uvicorn

from starchart import log_redaction
from starchart.api import polls
from starchart.api.app import create_app
from starchart.api.request_head import BoundedHeadProtocol
from starchart.api.shutdown import Drain
from starchart.settings import Settings
from starchart.store import Store


def freeze_start_up_objects() -> None:
    """Keep what start-up made (modules, the app, its schemas: over 100,000 objects that
    live as long as the process) out of the garbage collector's full collections. Each
    one scanned them all, a pause of 60-80 ms for every stream in flight on a 2-core
    machine, some 0.1 ms of CPU per relayed request on average; after this, well under
    a millisecond. Models loaded later are not frozen: an unloaded one is collected."""
    gc.collect()
    gc.freeze()


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


class DrainingServer(uvicorn.Server):
    """uvicorn, except that the first SIGTERM/SIGINT drains the app (``api/shutdown.py``)
    before uvicorn stops, and a clean stop exits 0: uvicorn itself stops accepting at
    once, cuts streams at its own timeout and re-raises the signal (exit code 143).
    A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain
        self.signals = 0
        self.draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals > 1:
            self.should_exit = True
        if self.signals > 2:
            self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.signals and self.draining is None:
            self.draining = asyncio.create_task(self.drain.run())
        if self.draining is not None and self.draining.done():
            self.should_exit = True
        return await super().on_tick(counter)


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
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_level=settings.log_level, ws_max_size=settings.max_body_bytes,
                            # httptools, with h11's limit on a request's head.
                            http=BoundedHeadProtocol,
                            # What the drain left (it cut every request already).
                            timeout_graceful_shutdown=2)
    log_redaction.install()  # uvicorn.Config configured the handlers just now
    polls.install()  # the web page's timed re-reads: DEBUG, not INFO
    server = DrainingServer(config, app.state.drain)
    freeze_start_up_objects()
    server.run()
    return 128 + signal.SIGTERM if server.signals > 1 else 0
