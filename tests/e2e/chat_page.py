"""How the tests drive the chat page: one place that knows its selectors."""

from __future__ import annotations

from playwright.sync_api import Locator, Page, expect

ANSWER = "[data-role=assistant]"


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
