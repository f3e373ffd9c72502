"""The chat features people expect: parameters and presets, background streams,
live figures, the context gauge, the sidebar, the composer, layout and themes."""

from __future__ import annotations

import json

import httpx
from playwright.sync_api import Browser, Page, Route, expect

from tests.e2e.artifacts import screenshot
from tests.e2e.chat_page import (
    GENERATE,
    ask,
    current_id,
    last_answer,
    open_chat,
    open_conversation,
    set_param,
    stored,
    user_messages,
    wait_answered,
)


def test_every_sampling_field_has_agreeing_controls(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    # A typed value is kept as typed: the slider shows it, the step does not round it.
    set_param(page, "temperature", 0.123)
    assert page.locator("#param-temperature").input_value() == "0.123"
    # Keyboard steps land on the grid again.
    page.locator("#param-min_p").focus()
    page.locator("#param-min_p").press("Home")
    for _ in range(5):
        page.locator("#param-min_p").press("ArrowRight")
    expect(page.locator("#param-min_p-number")).to_have_value("0.05")
    set_param(page, "presence_penalty", 0.5)
    set_param(page, "frequency_penalty", -0.3)
    set_param(page, "max_tokens", 6)
    page.locator("#param-stop").fill("END\nSTOP")
    page.locator("#param-stop").press("Tab")
    with page.expect_request(GENERATE) as sent:
        ask(page, "Count to three.")
    body = sent.value.post_data_json
    assert body["temperature"] == 0.123 and body["min_p"] == 0.05
    assert body["presence_penalty"] == 0.5 and body["frequency_penalty"] == -0.3
    assert body["stop"] == ["END", "STOP"] and body["max_tokens"] == 6
    answer = wait_answered(page)
    assert not answer.get_by_test_id("error").count()


def test_presets_save_load_delete(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    set_param(page, "temperature", 0.9)
    set_param(page, "top_k", 20)
    page.locator("#preset-name").fill("creative")
    page.get_by_test_id("preset-save").click()
    page.get_by_test_id("reset-params").click()
    expect(page.locator("#param-top_k-number")).to_have_value("50")
    page.reload()
    open_chat(page, live_server.url)
    page.locator("#preset-name").fill("creative")
    page.get_by_test_id("preset-load").click()
    expect(page.locator("#param-temperature-number")).to_have_value("0.9")
    expect(page.locator("#param-top_k")).to_have_value("20")
    page.get_by_test_id("preset-delete").click()
    expect(page.get_by_test_id("preset-load")).to_be_disabled()
    page.reload()
    open_chat(page, live_server.url)
    page.locator("#preset-name").fill("creative")
    expect(page.get_by_test_id("preset-load")).to_be_disabled()


def test_default_system_prompt_for_new_chats(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    set_param(page, "max_tokens", 3)
    page.locator("#default-system-prompt").fill("You are a lighthouse keeper.")
    page.locator("#default-system-prompt").press("Tab")
    page.get_by_test_id("new-chat").click()
    expect(page.locator("#system-prompt")).to_have_value("You are a lighthouse keeper.")
    ask(page, "Hello")
    wait_answered(page)
    body = httpx.get(f"{live_server.url}/v1/conversations/{current_id(page)}").json()
    assert body["system_prompt"] == "You are a lighthouse keeper."


def long_answers_first(count: list[int]):
    """A route that makes the first generation long for sure (ignoring end-of-sequence)."""
    def handle(route: Route) -> None:
        count.append(1)
        body = route.request.post_data_json
        if len(count) == 1:
            body.update(ignore_eos=True, max_tokens=150)
        route.continue_(post_data=json.dumps(body))
    return handle


def test_switching_chats_while_an_answer_streams(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    set_param(page, "max_tokens", 8)
    seen: list[int] = []
    page.route(GENERATE, long_answers_first(seen))
    ask(page, "Tell me a long story about a lighthouse.")
    expect(last_answer(page)).to_have_attribute("data-streaming", "true")
    live = page.get_by_test_id("live-stats")
    expect(live).to_contain_text("tokens so far")
    expect(live).to_contain_text("first token after")
    first = current_id(page)

    page.get_by_test_id("new-chat").click()  # while the story streams
    expect(page.locator("[data-role]")).to_have_count(0)
    ask(page, "Name the capital of Germany.")
    wait_answered(page, timeout=90_000)
    second = current_id(page)
    assert second != first
    open_conversation(page, "lighthouse")
    wait_answered(page, timeout=90_000)
    expect(user_messages(page)).to_have_text("Tell me a long story about a lighthouse.")

    for conversation, tokens in ((first, 150), (second, None)):
        url = f"{live_server.url}/v1/conversations/{conversation}"
        reply = httpx.get(url).json()["messages"][-1]
        assert reply["role"] == "assistant" and reply["content"]
        assert reply["incomplete"] is False, reply
        if tokens:
            assert reply["usage"]["completion_tokens"] == tokens


def test_waiting_state_context_gauge_and_composer_growth(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    set_param(page, "max_tokens", 5)
    held: list[Route] = []
    page.route(GENERATE, lambda route: held.append(route))  # held: the model "has not started yet"
    ask(page, "Hello")
    waiting = page.get_by_test_id("waiting")
    expect(waiting).to_contain_text("Waiting for the model")
    expect(waiting).to_contain_text("1 s", timeout=5_000)
    held[0].continue_()
    answer = wait_answered(page)
    expect(waiting).to_have_count(0)
    usage = httpx.get(f"{live_server.url}/v1/conversations/{current_id(page)}").json()[
        "messages"][-1]["usage"]
    gauge = page.get_by_test_id("context-gauge")
    used = usage["prompt_tokens"] + usage["completion_tokens"]
    expect(gauge).to_contain_text(f"{used} / 2048")
    assert answer.get_by_test_id("stats").count()

    prompt = page.locator("#prompt")
    one = prompt.bounding_box()["height"]
    prompt.fill("a\nb\nc\nd\ne")
    five = prompt.bounding_box()["height"]
    assert five > one * 2
    prompt.fill("line\n" * 300)
    assert prompt.bounding_box()["height"] <= 0.41 * page.viewport_size["height"]


def test_sidebar_search_groups_and_short_tab_order(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    set_param(page, "max_tokens", 3)
    for text in ("About boats", "About trains"):
        page.get_by_test_id("new-chat").click()
        ask(page, text)
        wait_answered(page)
    chats = page.get_by_test_id("conversation")
    expect(chats).to_have_count(2)
    expect(page.locator(".chat-group-title")).to_have_text(["Today"])
    page.get_by_test_id("chat-search").fill("boat")
    expect(chats).to_have_count(1)
    expect(chats).to_contain_text("About boats")
    page.get_by_test_id("chat-search").fill("")
    # Two stops per row: its title and its menu button.
    focusable = page.locator(".sidebar li button:visible")
    expect(focusable).to_have_count(4)
    # The skip link is the first thing Tab reaches, and goes to the message box.
    first = "document.querySelector('a[href], button, input, select, textarea')"
    assert page.evaluate(f"{first}.classList.contains('skip-link')")
    skip = page.get_by_role("link", name="Skip to the message box")
    skip.focus()
    assert skip.bounding_box()["x"] >= 0  # visible when focused
    skip.press("Enter")
    expect(page.locator("#prompt")).to_be_focused()


def check_layout(page: Page, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_screenshots_and_layout(browser: Browser, live_server) -> None:
    for name, options in (
        ("desktop_1280x800", {"viewport": {"width": 1280, "height": 800}}),
        ("phone_390x844", {"viewport": {"width": 390, "height": 844}, "is_mobile": True,
                           "has_touch": True}),
    ):
        context = browser.new_context(**options)
        page = context.new_page()
        try:
            open_chat(page, live_server.url)
            width = options["viewport"]["width"]
            if width > 800:
                set_param(page, "max_tokens", 40)
                # The parameters panel fits: Reset is on screen without scrolling.
                reset = page.get_by_test_id("reset-params").bounding_box()
                assert reset and reset["y"] + reset["height"] <= 800
                ask(page, "Name the capital of Germany. Then write a haiku about it.")
                wait_answered(page)
            else:
                # The model's name is shown whole on a phone.
                picker = page.locator("#model-picker")
                assert picker.evaluate("e => e.scrollWidth <= e.clientWidth + 1")
                assert picker.bounding_box()["width"] >= 200
                ask(page, "Name the capital of Germany.")
                wait_answered(page)
            for theme in ("light", "dark"):
                if page.evaluate("document.documentElement.dataset.theme") != theme:
                    page.get_by_test_id("theme-toggle").click()
                check_layout(page, width)
                screenshot(page, f"chat_{name}_{theme}")
            page.goto(live_server.url + "/#/status")
            expect(page.get_by_test_id("models")).to_be_visible()
            check_layout(page, width)
            # A table wider than a phone scrolls inside its own box.
            assert page.locator(".table-wrap").evaluate(
                "e => e.getBoundingClientRect().right <= innerWidth")
            screenshot(page, f"status_{name}")
        finally:
            context.close()


def test_edit_and_resend_then_delete_a_message(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    set_param(page, "max_tokens", 4)
    ask(page, "First question")
    wait_answered(page)
    ask(page, "Second question")
    wait_answered(page)
    first_user = page.locator("[data-role=user]").first
    first_user.get_by_test_id("edit").click()
    page.get_by_test_id("edit-text").fill("Name the capital of Germany.")
    with page.expect_request(GENERATE) as sent:
        page.get_by_test_id("edit-send").click()
    assert sent.value.post_data_json["replace"].startswith("msg_")
    wait_answered(page)
    # The later turns were replaced, on the page and on the server.
    expect(user_messages(page)).to_have_text(["Name the capital of Germany."])
    turns = stored(live_server.url, current_id(page))
    assert [role for role, _ in turns] == ["user", "assistant"]
    assert turns[0][1] == "Name the capital of Germany."

    answer = page.locator("[data-role=assistant]")
    answer.get_by_test_id("delete-message").click()
    answer.get_by_role("button", name="Really delete?").click()
    expect(answer).to_have_count(0)
    left = stored(live_server.url, current_id(page))
    assert left == [("user", "Name the capital of Germany.")]


def test_reply_figures_stay_after_reload(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    set_param(page, "max_tokens", 12)
    ask(page, "Name the capital of Germany.")
    wait_answered(page)
    page.reload()
    open_chat(page, live_server.url)
    stats = page.get_by_test_id("stats").last
    expect(stats).to_contain_text("tok/s")
    expect(stats).to_contain_text("first token")
    expect(stats).to_contain_text("prompt")


def test_export_import_round_trip_and_content_search(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    set_param(page, "max_tokens", 4)
    ask(page, "Tell me about the Fresnel lens.")
    wait_answered(page)
    chats = page.get_by_test_id("conversation")
    chats.first.get_by_test_id("row-menu").click()
    with page.expect_download() as download:
        chats.first.get_by_role("button", name="JSON").click()
    path = download.value.path()
    page.locator("[data-testid=import] input[type=file]").set_input_files(path)
    expect(chats).to_have_count(2)
    expect(user_messages(page)).to_have_text(["Tell me about the Fresnel lens."])
    expect(page.locator("[data-role=assistant]")).to_have_count(1)
    first, second = (c["id"] for c in httpx.get(live_server.url + "/v1/conversations")
                     .json()["data"])
    assert stored(live_server.url, first) == stored(live_server.url, second)
    # Search finds words inside the messages, not only in titles.
    page.get_by_test_id("new-chat").click()
    ask(page, "Trains")
    wait_answered(page)
    expect(chats).to_have_count(3)
    page.get_by_test_id("chat-search").fill("fresnel")
    expect(chats).to_have_count(2)
