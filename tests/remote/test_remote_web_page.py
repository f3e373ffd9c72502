"""The chat page in a real browser, on a model served by an upstream: a front
whose model "far" is another starchart (the embedded model) on loopback, and whose
model "broken" has two upstreams with credentials in their URLs that nothing answers."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from starchart.api.app import create_app
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.engines.remote import RemoteEngine
from starchart.registry import EMBEDDED_NAME
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port
from tests.e2e.chat_page import ask, current_id, open_chat, set_param, stored, wait_answered
from tests.e2e.conftest import browser, context_options, page  # noqa: F401 - the page fixtures

# Ports nobody listens on; the server shows these URLs as http://user:***@...
CLOSED_PORTS = (free_port(), free_port())

# The answer's text each time it changes while it streams.
RECORD_STATES = """() => {
  window.__states = [];
  new MutationObserver(() => {
    const answer = [...document.querySelectorAll('[data-role=assistant]')].pop();
    const text = answer?.querySelector('[data-testid=answer]')?.textContent.trim();
    if (answer?.dataset.streaming === 'true' && text && window.__states.at(-1) !== text)
      window.__states.push(text);
  }).observe(document.body, {subtree: true, childList: true, characterData: true,
                             attributes: true});
}"""


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory, engine: LlamaCppEngine
                ) -> Iterator[LiveServer]:
    """The front (what the page's fixture opens), its upstream started first."""
    upstream_app = create_app(Settings(home=tmp_path_factory.mktemp("upstream"), n_ctx=2048),
                              engines=[engine])
    with LiveServer(upstream_app, free_port()) as upstream:
        settings = Settings(home=tmp_path_factory.mktemp("front"), n_ctx=2048,
                            upstream=[f"far={upstream.url}", "broken=" + ",".join(
                                f"http://user:secret@127.0.0.1:{port}" for port in CLOSED_PORTS)],
                            upstream_model=[f"far={EMBEDDED_NAME}"])
        with LiveServer(create_app(settings, engines=[engine]), free_port()) as front:
            yield front


def test_chatting_with_a_remote_model_on_the_page(
        page: Page, live_server: LiveServer) -> None:  # noqa: F811 - the imported fixture
    remote = live_server.app.state.service.engines["far"]
    assert isinstance(remote, RemoteEngine)
    served = remote.upstreams[0].requests
    open_chat(page, live_server.url)
    picker = page.locator("#model-picker")
    expect(picker.locator("option", has_text="far")).to_have_count(1)
    picker.select_option("far")
    set_param(page, "temperature", 0)
    set_param(page, "max_tokens", 24)
    page.evaluate(RECORD_STATES)
    ask(page, "Name the capital of Germany.")
    answer = wait_answered(page)
    final = answer.locator("[data-testid=answer]").inner_text().strip()
    assert "Berlin" in final
    growing = [s for s in page.evaluate("window.__states") if s != final]
    assert len(growing) >= 2, f"the answer did not stream in: {growing!r}"
    assert all(final.startswith(state) for state in growing)
    # Token counts and speed under the answer: the usage came through the relay.
    expect(answer.locator("[data-testid=stats]")).to_contain_text("tok/s")
    assert remote.upstreams[0].requests == served + 1  # the upstream wrote it

    conversation = current_id(page)
    assert stored(live_server.url, conversation) == [
        ("user", "Name the capital of Germany."), ("assistant", final)]
    kept = httpx.get(f"{live_server.url}/v1/conversations/{conversation}").json()
    assert kept["model"] == "far" and kept["messages"][1]["model"] == "far"

    page.reload()  # the stored conversation comes back, on its remote model
    expect(page.locator("[data-role=assistant] [data-testid=answer]")).to_have_text(final)
    expect(picker).to_have_value("far")
    ask(page, "And of France?")
    wait_answered(page)
    assert len(stored(live_server.url, conversation)) == 4
    assert remote.upstreams[0].requests == served + 2
    assert not page.watch.errors  # type: ignore[attr-defined]


def ask_broken(tab: Page, url: str) -> Locator:
    """Ask the model no upstream answers; its answer, once it has ended."""
    open_chat(tab, url)
    tab.locator("#model-picker").select_option("broken")
    ask(tab, "Hello?")
    return wait_answered(tab)


def test_an_upstream_error_is_shown_once(
        page: Page, live_server: LiveServer) -> None:  # noqa: F811 - the imported fixture
    answer = ask_broken(page, live_server.url)
    # The server kept the question: the error is the answer's (with Retry), not also a
    # banner over the composer.
    expect(answer.get_by_test_id("error")).to_contain_text(
        "no upstream of 'broken' could be reached")
    expect(page.get_by_role("alert")).to_have_count(1)
    expect(page.get_by_test_id("send-error")).to_have_count(0)
    expect(answer.get_by_test_id("regenerate")).to_have_text("Retry")
    assert not page.watch.errors  # type: ignore[attr-defined]


def test_an_error_reads_as_the_server_wrote_it_and_links_nowhere(
        page: Page, live_server: LiveServer) -> None:  # noqa: F811 - the imported fixture
    error = ask_broken(page, live_server.url).get_by_test_id("error")
    # Both masked URLs whole: not cut into a link at the colon (to http://user), and
    # their *** not read as emphasis around the text between them.
    for port in CLOSED_PORTS:
        expect(error).to_contain_text(f"http://user:***@127.0.0.1:{port}")
    expect(error.locator("a, em, strong")).to_have_count(0)
    assert "secret" not in error.inner_text()
