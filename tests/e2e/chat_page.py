"""How the tests drive the chat page: one place that knows its selectors."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Locator, Page, expect

ANSWER = "[data-role=assistant]"
# The request that generates an answer: chat completions with the history when
# chats live in the browser, the conversation's messages route when the server
# stores them (issue 6).
GENERATE = re.compile(r"/v1/(chat/completions|conversations/[^/]+/messages)$")


def user_text(body: dict[str, Any]) -> str:
    """The new user message a generation request carries, in either form."""
    return body["content"] if "content" in body else body["messages"][-1]["content"]


def stored_on_server(page: Page) -> bool:
    return page.get_by_text("Saved on the server").is_visible()


def open_chat(page: Page, url: str) -> None:
    page.goto(url + "/")
    # Ready when the models are listed and the parameters came from the server.
    expect(page.locator("#model-picker option")).not_to_have_count(0)


def set_param(page: Page, name: str, value: float | int) -> None:
    box = page.locator(f"#param-{name}-number")
    box.fill(str(value))
    box.press("Enter")
    expect(page.locator(f"#param-{name}")).to_have_value(str(value))


def ask(page: Page, text: str) -> None:
    prompt = page.locator("#prompt")
    prompt.fill(text)
    prompt.press("Enter")


def last_answer(page: Page) -> Locator:
    return page.locator(ANSWER).last


def wait_answered(page: Page, timeout: float = 60_000) -> Locator:
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-streaming", "false", timeout=timeout)
    return answer
