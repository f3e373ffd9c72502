"""A first visit starts from the server's sampling defaults, but a value the user sets
before they arrive is kept (the page used to overwrite it: a busy machine's flaky tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, Route, expect

from starchart.settings import Settings

from tests.e2e.chat_page import open_chat, set_param

SYSTEM = "You keep a lighthouse."


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The server's system prompt, from the same answer: the page shows it once that arrived.
    return Settings(home=tmp_path / "home", n_ctx=2048, system_prompt=SYSTEM)


def test_a_parameter_set_before_the_servers_defaults_arrive_is_kept(page: Page,
                                                                    live_server) -> None:
    held: list[Route] = []
    page.route("**/v1/defaults", lambda route: held.append(route))  # slow to come
    open_chat(page, live_server.url, wait_for_defaults=False)
    expect(page.locator("#param-max_tokens")).to_have_value("1024")  # this file's guess
    set_param(page, "max_tokens", 4)
    assert held, "the page asked for the defaults"
    with page.expect_response("**/v1/defaults"):
        for route in held:
            route.continue_()
    page.unroute("**/v1/defaults")
    expect(page.locator("#system-prompt")).to_have_value(SYSTEM)  # the answers were read
    expect(page.locator("#param-max_tokens")).to_have_value("4")
    page.reload()
    open_chat(page, live_server.url)
    expect(page.locator("#param-max_tokens")).to_have_value("4")
