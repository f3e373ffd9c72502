"""Continue an answer cut at the token limit; the waiting state with the queue
position; tool calls shown as collapsible blocks and the JSON schema field
(issues 15 and 16), in Chromium against the embedded model."""

from __future__ import annotations

import json

import httpx
from playwright.sync_api import Browser, Page, expect

from tests.conftest import model_kept_busy
from tests.e2e.artifacts import screenshot
from tests.e2e.chat_page import (
    GENERATE,
    ask,
    current_id,
    last_answer,
    open_chat,
    same_port_again,
    set_param,
    stored,
    wait_answered,
)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                   "required": ["city"], "additionalProperties": False}}}
CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"], "additionalProperties": False}


def test_continue_an_answer_cut_at_the_token_limit(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    set_param(page, "max_tokens", 10)
    set_param(page, "temperature", 0)
    ask(page, "Write a long story about a lighthouse keeper and a storm.")
    answer = wait_answered(page)
    expect(answer.get_by_test_id("stats")).to_contain_text("hit the token limit")
    cut = answer.get_by_test_id("answer").inner_text()
    before = stored(live_server.url, current_id(page))[1][1]

    set_param(page, "max_tokens", 60)
    with page.expect_request(GENERATE) as sent:
        answer.get_by_test_id("continue").click()
    body = sent.value.post_data_json
    assert body["continue"] is True and "content" not in body and "regenerate" not in body
    # Live, the prompt (the answer so far included) and how fast it was read.
    expect(page.get_by_test_id("live-stats")).to_contain_text("prompt")
    expect(page.get_by_test_id("live-stats")).to_contain_text("tokens at")
    answer = wait_answered(page)
    # The same answer grew: no new message, no new user turn.
    expect(page.locator("[data-role=assistant]")).to_have_count(1)
    expect(page.locator("[data-role=user]")).to_have_count(1)
    grown = answer.get_by_test_id("answer").inner_text()
    assert len(grown) > len(cut)
    turns = stored(live_server.url, current_id(page))
    assert [role for role, _ in turns] == ["user", "assistant"]
    assert turns[1][1].startswith(before) and len(turns[1][1]) > len(before)
    # Its figures are the continuation's, kept after a reload; it can go on again.
    page.reload()
    open_chat(page, live_server.url)
    answer = last_answer(page)
    expect(answer.get_by_test_id("answer")).to_have_text(grown)
    expect(answer.get_by_test_id("stats")).to_contain_text("prompt")
    expect(answer.get_by_test_id("continue")).to_be_visible()


def test_waiting_state_shows_the_queue_position_then_live_figures(
        browser: Browser, one_slot_server) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        open_chat(page, one_slot_server.url)
        set_param(page, "max_tokens", 60)
        with model_kept_busy(one_slot_server.url):
            ask(page, "Write a long story about a lighthouse keeper and a storm.")
            waiting = page.get_by_test_id("waiting")
            expect(waiting).to_contain_text("Waiting for the model: number 1 in its queue")
            # No empty answer bubble while nothing has been said.
            expect(last_answer(page).get_by_test_id("answer")).to_be_hidden()
            screenshot(page, "chat_waiting_in_queue")
        live = page.get_by_test_id("live-stats")
        expect(live).to_contain_text("tokens so far")
        expect(live).to_contain_text("first token after")
        expect(waiting).to_have_count(0)
        wait_answered(page)
        page.reload()
        open_chat(page, one_slot_server.url)
        # Kept: how long it queued, and the prompt's speed without the queue.
        stats = last_answer(page).get_by_test_id("stats")
        expect(stats).to_contain_text("s in the queue)")
        expect(stats).to_contain_text("tokens at")
        expect(stats).to_contain_text("tok/s")
    finally:
        context.close()


def test_tool_call_block_and_json_schema_field(page: Page, live_server) -> None:
    with httpx.Client(base_url=live_server.url, timeout=120) as api:
        cid = api.post("/v1/conversations", json={"title": "Weather"}).json()["id"]
        turn = api.post(f"/v1/conversations/{cid}/messages", json={
            "content": "What is the weather in Paris?", "tools": [WEATHER],
            "tool_choice": "required", "max_tokens": 40, "stream": False}).json()
    call = turn["message"]["tool_calls"][0]
    open_chat(page, live_server.url)
    page.locator(".conversation-title", has_text="Weather").click()
    block = page.get_by_test_id("tool-call")
    expect(block).to_have_count(1)
    expect(block.locator("summary")).to_contain_text("get_weather")
    arguments = block.get_by_test_id("tool-call-arguments")
    expect(arguments).to_be_hidden()  # folded until opened
    block.locator("summary").click()
    expect(arguments).to_be_visible()
    assert json.loads(arguments.inner_text()) == json.loads(call["function"]["arguments"])
    screenshot(page, "chat_tool_call")

    # A schema that is not JSON: said at once, beside the field; nothing is sent.
    page.get_by_test_id("new-chat").click()
    schema = page.locator("#param-json-schema")
    schema.fill('{"type": "object", "properties": ')
    schema.press("Tab")
    expect(page.get_by_test_id("schema-error")).to_contain_text("not valid JSON")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    ask(page, "Which city is the capital of France?")
    expect(page.get_by_test_id("send-error")).to_contain_text("nothing was sent")
    expect(page.locator("#prompt")).to_have_value("Which city is the capital of France?")
    assert sent == [] and page.get_by_test_id("conversation").count() == 1
    expect(page.get_by_test_id("retry-send")).to_have_count(0)

    # A valid one: the answer is held to it.
    schema.fill(json.dumps(CITY))
    schema.press("Tab")
    expect(page.get_by_test_id("schema-error")).to_have_count(0)
    expect(page.get_by_test_id("schema-on")).to_be_visible()
    set_param(page, "max_tokens", 40)
    with page.expect_request(GENERATE) as request:
        page.get_by_test_id("send").click()
    format_ = request.value.post_data_json["response_format"]
    assert format_["type"] == "json_schema" and format_["json_schema"]["schema"] == CITY
    answer = wait_answered(page)
    city = json.loads(answer.get_by_test_id("answer").inner_text())
    assert set(city) == {"city"} and isinstance(city["city"], str)
    screenshot(page, "chat_json_schema")


def test_a_continuation_cut_by_the_server_going_away(page: Page, live_server, settings,
                                                     engine) -> None:
    open_chat(page, live_server.url)
    set_param(page, "max_tokens", 10)
    ask(page, "Write a long story about a lighthouse keeper and a storm.")
    answer = wait_answered(page)
    conversation = current_id(page)
    set_param(page, "max_tokens", 400)
    answer.get_by_test_id("continue").click()
    expect(page.get_by_test_id("live-stats")).to_contain_text("tokens so far")
    live_server.stop()
    expect(answer.get_by_test_id("error")).to_contain_text("Cannot reach")
    # The old figures ("hit the token limit") no longer describe it, and the
    # answer is not offered a "Retry" that would replace it.
    stats = answer.get_by_test_id("stats")
    expect(stats).to_contain_text("stopped")
    expect(stats).not_to_contain_text("token limit")
    expect(answer.get_by_test_id("regenerate")).to_have_text("Regenerate")
    with same_port_again(live_server, settings, engine) as again:
        expect(page.get_by_test_id("offline")).to_be_hidden(timeout=15_000)
        kept = stored(again.url, conversation)[1][1]
        set_param(page, "max_tokens", 8)
        answer.get_by_test_id("continue").click()
        answer = wait_answered(page)
        expect(answer.get_by_test_id("error")).to_have_count(0)
        final = stored(again.url, conversation)
        assert len(final) == 2 and final[1][1].startswith(kept) and len(final[1][1]) > len(kept)
