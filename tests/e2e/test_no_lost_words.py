"""Nothing the user typed is lost, and what the server keeps is what was said.

Each test here was written against the page that lost words (issue 15) and
failed there: Retry after a failed send, the server going away, Reset
parameters, drafts across a reload, a message over the context window.
"""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.e2e.chat_page import (
    ask,
    current_id,
    open_chat,
    open_conversation,
    same_port_again,
    set_param,
    stored,
    user_messages,
    wait_answered,
)


def test_retry_sends_the_failed_message_itself(page: Page, live_server, settings,
                                              engine) -> None:
    open_chat(page, live_server.url)
    set_param(page, "max_tokens", 4)
    ask(page, "Name the capital of Germany.")
    wait_answered(page)
    conversation = current_id(page)

    live_server.stop()
    ask(page, "Name a fruit that is yellow.")
    retry = page.get_by_role("button", name="Retry")
    expect(retry).to_be_visible()
    expect(page.get_by_test_id("offline")).to_be_visible()
    with same_port_again(live_server, settings, engine) as again:
        expect(page.get_by_test_id("offline")).to_be_hidden(timeout=15_000)
        retry.click()
        wait_answered(page)
        expect(page.locator("[data-role=assistant]")).to_have_count(2)
        turns = stored(again.url, conversation)
        assert [role for role, _ in turns] == ["user", "assistant", "user", "assistant"]
        assert turns[0][1] == "Name the capital of Germany."
        assert turns[2][1] == "Name a fruit that is yellow."
        assert all(text for _, text in turns)
        page.reload()
        expect(page.locator("[data-role=user]")).to_have_count(2)
        expect(user_messages(page).last).to_have_text("Name a fruit that is yellow.")
        expect(page.locator("#prompt")).to_have_value("")
        page.close()


def test_server_away_the_page_says_so_keeps_the_text_and_reconnects(
        page: Page, live_server, settings, engine) -> None:
    open_chat(page, live_server.url)
    set_param(page, "max_tokens", 4)
    page.goto(live_server.url + "/#/status")
    live_server.stop()
    page.goto(live_server.url + "/#/")  # the chat view again, with the server away
    expect(page.get_by_test_id("offline")).to_be_visible()
    expect(page.get_by_text("Saved in this browser")).to_have_count(0)
    ask(page, "Remember the lighthouse")
    expect(page.locator("#prompt")).to_have_value("Remember the lighthouse")
    expect(page.locator("[data-role=user]")).to_have_count(0)
    with same_port_again(live_server, settings, engine) as again:
        expect(page.get_by_test_id("offline")).to_be_hidden(timeout=15_000)
        page.get_by_test_id("send").click()
        wait_answered(page)
        expect(page.locator("#prompt")).to_have_value("")
        page.reload()
        open_chat(page, again.url)
        expect(page.get_by_test_id("conversation")).to_have_count(1)
        expect(user_messages(page)).to_have_text("Remember the lighthouse")
        # One store: nothing about conversations was kept in the browser.
        keys = page.evaluate("Object.keys(localStorage)")
        assert "starchart.conversations" not in keys, keys
        assert httpx.get(again.url + "/v1/conversations").json()["data"][0]["title"]
        page.close()


def test_reset_parameters_keeps_the_conversations_system_prompt(page: Page,
                                                                live_server) -> None:
    open_chat(page, live_server.url)
    set_param(page, "max_tokens", 3)
    set_param(page, "top_p", 0.5)
    page.locator("#system-prompt").fill("You are a pirate.")
    ask(page, "Hello")
    wait_answered(page)
    page.get_by_test_id("reset-params").click()
    defaults = httpx.get(live_server.url + "/v1/defaults").json()
    expect(page.locator("#param-top_p-number")).to_have_value(str(defaults["top_p"]))
    expect(page.locator("#system-prompt")).to_have_value("You are a pirate.")
    page.reload()
    open_chat(page, live_server.url)
    expect(page.locator("#system-prompt")).to_have_value("You are a pirate.")
    body = httpx.get(f"{live_server.url}/v1/conversations/{current_id(page)}").json()
    assert body["system_prompt"] == "You are a pirate."


def test_drafts_persist_per_conversation_until_sent(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    set_param(page, "max_tokens", 3)
    page.locator("#system-prompt").fill("Answer in French.")
    page.locator("#prompt").fill("half a thought")
    page.reload()
    open_chat(page, live_server.url)
    expect(page.locator("#system-prompt")).to_have_value("Answer in French.")
    expect(page.locator("#prompt")).to_have_value("half a thought")

    page.locator("#prompt").press("Enter")
    wait_answered(page)
    first = current_id(page)
    assert stored(live_server.url, first)[0] == ("user", "half a thought")
    page.locator("#prompt").fill("draft for the first chat")
    page.get_by_test_id("new-chat").click()
    expect(page.locator("#prompt")).to_have_value("")
    page.locator("#prompt").fill("draft for a new chat")
    open_conversation(page, "half a thought")
    expect(page.locator("#prompt")).to_have_value("draft for the first chat")
    # A system prompt edited in an open chat is kept until the server has it.
    page.locator("#system-prompt").fill("Answer in German.")
    page.reload()
    open_chat(page, live_server.url)
    expect(page.locator("#prompt")).to_have_value("draft for the first chat")
    expect(page.locator("#system-prompt")).to_have_value("Answer in German.")
    body = httpx.get(f"{live_server.url}/v1/conversations/{first}").json()
    assert body["system_prompt"] == "Answer in German."
    page.get_by_test_id("new-chat").click()
    expect(page.locator("#prompt")).to_have_value("draft for a new chat")


def test_a_message_over_the_context_window(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    set_param(page, "max_tokens", 3)
    long = "tell me about this: " + "lighthouse keeper " * 1500
    ask(page, long)
    error = page.get_by_test_id("send-error")
    expect(error).to_contain_text("context window holds 2048")
    text = error.inner_text().strip()
    assert text.count(".") == 1 and text.endswith("."), text  # one sentence
    assert text.lower().count("shorten") == 1, text
    expect(page.locator("#prompt")).to_have_value(long.strip())
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    expect(page.locator("[data-role=user]")).to_have_count(0)
    # No empty conversation was left behind, on the page or on the server.
    expect(page.get_by_test_id("conversation")).to_have_count(0)
    assert httpx.get(live_server.url + "/v1/conversations").json()["data"] == []

    # A long message that fits is sent, and shown folded until asked for.
    ask(page, "Summarise: " + "the keeper climbs the stairs every night\n" * 60)
    wait_answered(page)
    bubble = page.get_by_test_id("user-text")
    assert bubble.bounding_box()["height"] < 300
    page.get_by_test_id("expand").click()
    assert bubble.bounding_box()["height"] > 600

    # Error text is markdown: the command is code, not backticks.
    live_server.stop()
    ask(page, "Are you there?")
    expect(error).to_contain_text("Cannot reach the starchart server")
    expect(error.locator("code").first).to_have_text("starchart serve")
    assert "`" not in error.inner_text()
    expect(page.locator("#prompt")).to_have_value("Are you there?")
