"""With the conversations API (issue 6), the page keeps chats on the server:
they survive a server restart and are seen from any browser."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from starchart.api.app import create_app
from starchart.store import Store

from tests.conftest import LiveServer, free_port
from tests.e2e.artifacts import screenshot
from tests.e2e.chat_page import (
    GENERATE,
    ask,
    open_chat,
    open_conversation,
    set_param,
    wait_answered,
)


def test_conversations_live_on_the_server_across_a_restart(browser: Browser, live_server,
                                                           settings, engine) -> None:
    page = browser.new_context().new_page()
    open_chat(page, live_server.url)
    expect(page.get_by_text("Saved on the server")).to_be_visible()
    set_param(page, "max_tokens", 4)
    with page.expect_request("**/v1/conversations/*/messages") as sent:
        ask(page, "Remember the lighthouse")
    assert sent.value.post_data_json["content"] == "Remember the lighthouse"
    wait_answered(page)
    expect(page.get_by_test_id("conversation")).to_have_count(1)
    page.context.close()

    # Stop the server; a new one on the same data directory still has the chat.
    live_server.stop()
    with LiveServer(create_app(settings, engines=[engine]), free_port()) as again:
        page = browser.new_context().new_page()  # another browser profile, too
        open_chat(page, again.url)
        chats = page.get_by_test_id("conversation")
        expect(chats).to_have_count(1)
        open_conversation(page, "Remember the lighthouse")
        expect(page.locator("[data-role=user]")).to_contain_text("Remember the lighthouse")
        expect(page.locator("[data-role=assistant]")).to_have_count(1)
        page.context.close()


def test_api_key_pasted_into_the_page_is_sent(page, live_server, settings, engine) -> None:
    store = Store.open(settings)
    try:
        _, secret = store.keys.create("web page test")
    finally:
        store.close()
    with LiveServer(create_app(settings, engines=[engine]), free_port()) as server:
        page.goto(server.url + "/")
        # Without the key: a readable message saying what to do, not a blank page.
        expect(page.get_by_test_id("notice")).to_contain_text("API key")
        page.get_by_role("button", name="API key").click()
        page.locator("#api-key").fill(secret)
        page.locator("#api-key").press("Enter")  # saves and reloads
        open_chat(page, server.url)
        set_param(page, "max_tokens", 3)
        with page.expect_request(GENERATE) as sent:
            ask(page, "Hi")
        assert sent.value.headers["authorization"] == f"Bearer {secret}"
        expect(wait_answered(page).get_by_test_id("stats")).to_contain_text("3 tokens")
        screenshot(page, "test_api_key_pasted_into_the_page_is_sent")
        page.close()
