"""How the tests drive the chat page: one place that knows its selectors."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Locator, Page, expect

from starchart.api.app import create_app
from starchart.engines.base import Engine
from starchart.registry import embedded_gguf
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port

ANSWER = "[data-role=assistant]"
# The request that generates an answer: the server stores every conversation.
GENERATE = re.compile(r"/v1/conversations/[^/]+/messages$")


@contextmanager
def two_models_on_demand(home: Path, *, parallel: int) -> Iterator[LiveServer]:
    """A server with two models (one file, two names), loaded on demand: both start
    unloaded."""
    gguf = embedded_gguf()
    settings = Settings(home=home, model=[f"first={gguf}", f"second={gguf}"], n_ctx=512,
                        parallel=parallel, load_on_demand=True)
    with LiveServer(create_app(settings), free_port()) as server:
        yield server


def user_text(body: dict[str, Any]) -> str:
    """The new user message a generation request carries."""
    return body["content"]


def open_chat(page: Page, url: str, *, wait_for_defaults: bool = True) -> None:
    page.goto(url + "/")
    # Ready when the first load has its answers: the models are listed and the
    # parameters came from the server (a value set before they arrive may race them).
    if wait_for_defaults:
        expect(page.locator(".chat-layout[data-ready=true]")).to_have_count(1)
    expect(page.locator("#model-picker option")).not_to_have_count(0)


def set_param(page: Page, name: str, value: float | int) -> None:
    box = page.locator(f"#param-{name}-number")
    box.fill(str(value))
    box.press("Enter")
    expect(page.locator(f"#param-{name}")).to_have_value(str(value))


def stored(url: str, conversation_id: str) -> list[tuple[str, str]]:
    """(role, content) of every message the server keeps for a conversation."""
    body = httpx.get(f"{url}/v1/conversations/{conversation_id}").json()
    return [(m["role"], m["content"]) for m in body["messages"]]


def current_id(page: Page) -> str:
    """The open conversation's id (the page remembers it for the next visit)."""
    return json.loads(page.evaluate("localStorage.getItem('starchart.current')") or '""')


def open_conversation(page: Page, title: str) -> None:
    page.locator(".conversation-title", has_text=title).click()


def user_messages(page: Page) -> Locator:
    return page.locator("[data-role=user] [data-testid=user-text]")


def ask(page: Page, text: str) -> None:
    prompt = page.locator("#prompt")
    prompt.fill(text)
    prompt.press("Enter")


def last_answer(page: Page) -> Locator:
    return page.locator(ANSWER).last


def same_port_again(server: LiveServer, settings: Settings, engine: Engine) -> LiveServer:
    """A new server on a stopped one's port and data directory: the page's URL works again."""
    return LiveServer(create_app(settings, engines=[engine]), server.port)


def wait_answered(page: Page, timeout: float = 60_000) -> Locator:
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-streaming", "false", timeout=timeout)
    return answer
