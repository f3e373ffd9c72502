"""Several models in the web page, in a real browser: the picker shows each model with
its state and loads the one chosen; the status page shows memory per model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import LiveServer
from tests.e2e.chat_page import two_models_on_demand


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    with two_models_on_demand(tmp_path / "home", parallel=2) as server:
        yield server


def test_the_picker_shows_states_and_loads_the_chosen_model(page: Page,
                                                            live_server: LiveServer) -> None:
    page.goto(live_server.url + "/")
    picker = page.locator("#model-picker")
    expect(picker.locator("option")).to_have_text(["first (unloaded)", "second (unloaded)"])
    picker.select_option("second")
    expect(picker.locator("option[value=second]")).to_have_text("second", timeout=20_000)
    expect(picker.locator("option[value=second]")).to_have_attribute("data-state", "loaded")
    states = {m["id"]: m["state"] for m in
              httpx.get(live_server.url + "/v1/models").json()["data"]}
    assert states == {"first": "unloaded", "second": "loaded"}
    expect(picker.locator("option[value=first]")).to_have_text("first (unloaded)")


def test_the_status_page_shows_each_models_state_and_memory(page: Page,
                                                            live_server: LiveServer) -> None:
    page.goto(live_server.url + "/#/status")
    models = page.get_by_test_id("models")
    expect(models.locator("tr", has_text="first")).to_contain_text("unloaded")
    expect(page.get_by_test_id("memory-first")).to_contain_text("MiB")
    httpx.post(live_server.url + "/v1/models/first/load", timeout=60)
    # the page polls: the new state shows without a reload
    expect(models.locator("tr", has_text="first")).to_contain_text("loaded", timeout=10_000)
    expect(models.locator("tr", has_text="first")).not_to_contain_text("unloaded")
