"""The model picker keeps up with the server while the page stays open: a server that
goes away and comes back (reloading its model), and models loaded or unloaded by
someone else. Written against the page that showed "(loading)" until it was reloaded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from starchart.api.app import create_app
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.registry import EMBEDDED_NAME, embedded_gguf
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port
from tests.e2e.artifacts import screenshot
from tests.e2e.chat_page import open_chat, two_models_on_demand

# Longer than one of the page's polls of the model list, shorter than a test's patience.
FOLLOWS = 15_000


class GatedEngine(LlamaCppEngine):
    """The embedded model, whose load waits for the test to open ``gate``: a start-up
    that takes as long as the test needs to look at the page meanwhile."""

    def __init__(self, *, open_gate: bool) -> None:
        super().__init__(EMBEDDED_NAME, embedded_gguf(), n_ctx=512, parallel=1)
        self.gate = threading.Event()
        if open_gate:
            self.gate.set()

    def load(self) -> None:
        if not self.gate.wait(timeout=60):
            raise RuntimeError("the test never let the model load")
        super().load()


@pytest.fixture
def first_engine() -> Iterator[GatedEngine]:
    engine = GatedEngine(open_gate=True)
    yield engine
    engine.close()  # engines passed to create_app stay the caller's to close


@pytest.fixture
def live_server(settings: Settings, first_engine: GatedEngine) -> Iterator[LiveServer]:
    with LiveServer(create_app(settings, engines=[first_engine]), free_port()) as server:
        yield server


def test_the_picker_says_the_server_is_away_and_recovers_once_its_model_loads(
        page: Page, live_server: LiveServer, settings: Settings) -> None:
    open_chat(page, live_server.url)
    option = page.locator("#model-picker option")
    expect(option).to_have_text([EMBEDDED_NAME])

    live_server.stop()
    # Nobody touches the page: it finds out by itself, and says so.
    expect(page.get_by_test_id("offline")).to_be_visible(timeout=FOLLOWS)
    expect(option).to_have_text([f"{EMBEDDED_NAME} (unreachable)"])
    expect(page.locator("#model-picker")).to_be_disabled()
    screenshot(page, "picker-server-away")

    # The server starts again, its model not loaded yet: the page reconnects meanwhile.
    engine = GatedEngine(open_gate=False)
    again = LiveServer(create_app(settings, engines=[engine]), live_server.port,
                       wait_ready=False)
    try:
        with again:
            expect(page.get_by_test_id("offline")).to_be_hidden(timeout=FOLLOWS)
            expect(option).to_have_text([f"{EMBEDDED_NAME} (loading)"])
            screenshot(page, "picker-server-back-loading")
            engine.gate.set()
            expect(option).to_have_text([EMBEDDED_NAME], timeout=FOLLOWS)
            expect(option).to_have_attribute("data-state", "loaded")
            expect(page.locator("#model-picker")).to_be_enabled()
            screenshot(page, "picker-server-back-loaded")
            page.close()
    finally:
        engine.gate.set()
        engine.close()


@pytest.fixture
def two_models(tmp_path: Path) -> Iterator[LiveServer]:
    with two_models_on_demand(tmp_path / "home", parallel=1) as server:
        yield server


def test_the_picker_follows_loads_and_unloads_made_elsewhere(
        browser, context_options: dict[str, object], two_models: LiveServer) -> None:
    context = browser.new_context(**context_options)
    try:
        page = context.new_page()
        marks: list[str | None] = []  # X-Starchart-Poll of each read of the model list
        page.on("request", lambda r: marks.append(r.headers.get("x-starchart-poll"))
                if r.method == "GET" and r.url.endswith("/v1/models") else None)
        open_chat(page, two_models.url)
        picker = page.locator("#model-picker")
        expect(picker.locator("option")).to_have_text(["first (unloaded)", "second (unloaded)"])

        httpx.post(two_models.url + "/v1/models/second/load", timeout=60).raise_for_status()
        expect(picker.locator("option")).to_have_text(["first (unloaded)", "second"],
                                                      timeout=FOLLOWS)
        screenshot(page, "picker-loaded-elsewhere")

        httpx.post(two_models.url + "/v1/models/second/unload", timeout=60).raise_for_status()
        expect(picker.locator("option")).to_have_text(
            ["first (unloaded)", "second (unloaded)"], timeout=FOLLOWS)
        # Nothing was chosen for the user meanwhile.
        expect(picker).to_have_value("first")
        # The page's first read logs at INFO; its timed re-reads, which saw the load and
        # the unload, are marked so that the server logs them at DEBUG.
        assert marks[0] is None and "1" in marks[1:] and set(marks) <= {None, "1"}, marks
    finally:
        context.close()
