"""The chat page's conversation list, regenerate, copy, phone layout and themes."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.artifacts import screenshot
from tests.e2e.chat_page import (
    GENERATE,
    ask,
    open_chat,
    open_conversation,
    set_param,
    wait_answered,
)


def test_conversations_new_rename_delete_survive_reload(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    set_param(page, "max_tokens", 4)
    ask(page, "First chat about boats")
    wait_answered(page)
    chats = page.get_by_test_id("conversation")
    expect(chats).to_have_count(1)
    expect(chats.first).to_contain_text("First chat about boats")

    page.get_by_test_id("new-chat").click()
    expect(page.locator("[data-role=assistant]")).to_have_count(0)
    ask(page, "Second chat about trains")
    wait_answered(page)
    expect(chats).to_have_count(2)
    expect(chats.first).to_contain_text("Second chat about trains")  # newest first

    # Row actions sit behind one menu button per row (a short tab order).
    chats.filter(has_text="First chat").get_by_test_id("row-menu").click()
    chats.filter(has_text="First chat").get_by_role("button", name="Rename").click()
    title = page.locator(".rename input")
    title.fill("Boats")
    title.press("Enter")
    expect(chats.filter(has_text="Boats")).to_have_count(1)
    expect(chats.filter(has_text="First chat")).to_have_count(0)

    page.reload()
    open_chat(page, live_server.url)
    expect(chats).to_have_count(2)
    # The open conversation comes back with its messages.
    expect(page.locator("[data-role=user]")).to_contain_text("Second chat about trains")
    open_conversation(page, "Boats")
    expect(page.locator("[data-role=user]")).to_contain_text("First chat about boats")
    expect(page.locator(".chat-title")).to_have_text("Boats")

    chats.filter(has_text="Boats").get_by_test_id("row-menu").click()
    with page.expect_download() as download:
        chats.filter(has_text="Boats").get_by_role("button", name="Export").click()
    exported = open(download.value.path(), encoding="utf-8").read()
    assert exported.startswith("# Boats") and "First chat about boats" in exported

    chats.filter(has_text="Boats").get_by_test_id("row-menu").click()
    delete = chats.filter(has_text="Boats").get_by_role("button", name="Delete")
    delete.click()
    chats.filter(has_text="Boats").get_by_role("button", name="Really delete?").click()
    expect(chats).to_have_count(1)
    expect(page.locator(".chat-title")).to_have_text("New chat")
    page.reload()
    open_chat(page, live_server.url)
    expect(chats).to_have_count(1)


@pytest.fixture
def context_options() -> dict[str, object]:
    return {"viewport": {"width": 1280, "height": 860},
            "permissions": ["clipboard-read", "clipboard-write"]}


def test_regenerate_and_copy(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    set_param(page, "temperature", 0)
    ask(page, "What is the capital of France?")
    first = wait_answered(page).get_by_test_id("answer").inner_text()

    with page.expect_request(GENERATE) as sent:
        page.get_by_test_id("regenerate").click()
    body = sent.value.post_data_json
    # The server answers the last user turn again, replacing the stored answer.
    assert body["regenerate"] is True and "content" not in body
    answer = wait_answered(page)
    expect(page.locator("[data-role=assistant]")).to_have_count(1)
    assert answer.get_by_test_id("answer").inner_text() == first  # temperature 0

    answer.get_by_role("button", name="Copy", exact=True).click()
    assert page.evaluate("navigator.clipboard.readText()") == first


def test_code_block_copy_button(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    body = ('data: {"choices":[{"index":0,"delta":{"content":"```python\\nprint(42)\\n```"}}]}'
            '\n\ndata: [DONE]\n\n')
    page.route(GENERATE, lambda r: r.fulfill(headers={"Content-Type": "text/event-stream"},
                                         body=body))
    ask(page, "code please")
    answer = wait_answered(page)
    expect(answer.locator("pre .hljs-built_in")).to_have_text("print")  # highlighted
    answer.get_by_role("button", name="Copy code").click()
    assert page.evaluate("navigator.clipboard.readText()").strip() == "print(42)"


def test_phone_layout_and_dark_theme(browser, live_server) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 780}, is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    try:
        open_chat(page, live_server.url)
        params = page.locator(".params")
        expect(params).to_be_hidden()
        page.get_by_role("button", name="Parameters", exact=True).click()
        expect(params).to_be_visible()
        set_param(page, "max_tokens", 4)
        params.get_by_role("button", name="Close").click()
        expect(params).to_be_hidden()
        ask(page, "Hi")
        wait_answered(page)
        # Nothing wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390

        page.get_by_test_id("theme-toggle").click()
        dark = page.evaluate("document.documentElement.dataset.theme")
        page.reload()
        open_chat(page, live_server.url)
        assert page.evaluate("document.documentElement.dataset.theme") == dark
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        page.get_by_test_id("theme-toggle").click()
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") != background
        page.get_by_test_id("theme-toggle").click()
        screenshot(page, "test_phone_layout_dark")
    finally:
        context.close()


def test_keyboard_only_chat(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    set_param(page, "max_tokens", 3)
    prompt = page.locator("#prompt")
    prompt.focus()
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    expect(prompt).to_have_value("line one\nline two")  # Shift+Enter: a new line
    page.keyboard.press("Enter")
    wait_answered(page)
    expect(page.locator("[data-role=user] .user-text")).to_have_text("line one\nline two",
                                                                      use_inner_text=True)
    # Focus comes back to the message box, ready for the next message.
    expect(prompt).to_be_focused()
