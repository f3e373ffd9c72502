"""The chat page in a real browser against the real server and embedded model."""

from __future__ import annotations

import json
import time

import httpx
from playwright.sync_api import Page, Route, expect

from tests.e2e.artifacts import screenshot
from tests.e2e.chat_page import (
    GENERATE,
    ask,
    last_answer,
    open_chat,
    set_param,
    user_text,
    wait_answered,
)

# Records the answer's text each time the DOM changes while it streams.
RECORD_STATES = """() => {
  window.__states = [];
  const log = document.querySelector('.messages');
  new MutationObserver(() => {
    const answer = [...log.querySelectorAll('[data-role=assistant]')].pop();
    if (answer && answer.dataset.streaming === 'true') {
      const text = answer.querySelector('[data-testid=answer]').textContent.trim();
      if (text && window.__states.at(-1) !== text) window.__states.push(text);
    }
  }).observe(log, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def test_answer_streams_in_and_names_paris(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    set_param(page, "temperature", 0)
    page.evaluate(RECORD_STATES)
    with page.expect_request(GENERATE) as sent:
        ask(page, "What is the capital of France?")
    body = sent.value.post_data_json
    assert user_text(body) == "What is the capital of France?"
    assert body["temperature"] == 0 and body["stream"] is True

    answer = wait_answered(page)
    final = answer.locator("[data-testid=answer]").inner_text().strip()
    assert "Paris" in final
    states = page.evaluate("window.__states")
    growing = [s for s in states if s != final]
    assert len(growing) >= 2, f"expected the answer to grow in steps, saw {states!r}"
    for state in growing:
        assert final.startswith(state), (state, final)
    assert len(set(map(len, growing))) == len(growing)
    # Token counts and speed under the answer, from the stream's usage chunk.
    expect(answer.locator("[data-testid=stats]")).to_contain_text("tokens")
    expect(answer.locator("[data-testid=stats]")).to_contain_text("tok/s")
    assert not page.watch.errors


def test_stop_cancels_generation_on_the_server(page: Page, live_server, engine) -> None:
    open_chat(page, live_server.url)

    # Make this answer long for sure: ignore end-of-sequence, as benchmarks do.
    def endless(route: Route) -> None:
        body = route.request.post_data_json
        body.update(ignore_eos=True, max_tokens=1500)
        route.continue_(post_data=json.dumps(body))

    page.route(GENERATE, endless)
    before = engine.tokens_generated
    ask(page, "Tell me a very long story about a lighthouse.")
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-streaming", "true")
    page.wait_for_function(
        "() => document.querySelector('[data-streaming=true] [data-testid=answer]')"
        "?.textContent.length > 40", timeout=30_000)
    page.get_by_test_id("stop").click()
    expect(answer).to_have_attribute("data-streaming", "false")
    expect(answer.locator("[data-testid=stats]")).to_contain_text("stopped")

    # The server's request ends and the engine's token counter stops moving.
    deadline = time.monotonic() + 30
    while httpx.get(live_server.url + "/v1/stats").json()["requests_in_flight"]:
        assert time.monotonic() < deadline, "the server kept generating after Stop"
        time.sleep(0.05)
    stopped_at = engine.tokens_generated
    time.sleep(0.5)
    assert engine.tokens_generated == stopped_at
    assert 0 < stopped_at - before < 1500
    expect(page.get_by_test_id("send")).to_be_visible()
    assert not answer.get_by_test_id("error").count()
    expect(page.get_by_test_id("send-error")).to_have_count(0)  # Stop is no error


def test_moving_sliders_changes_the_request(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    temperature = page.locator("#param-temperature")
    temperature.focus()
    temperature.press("Home")
    for _ in range(3):
        temperature.press("ArrowRight")
    expect(page.locator("#param-temperature-number")).to_have_value("0.15")
    top_k = page.locator("#param-top_k")
    top_k.focus()
    top_k.press("ArrowLeft")
    set_param(page, "max_tokens", 5)
    page.locator("#param-seed").fill("1234")
    page.locator("#param-seed").press("Tab")

    with page.expect_request(GENERATE) as sent:
        ask(page, "Say hello.")
    body = sent.value.post_data_json
    assert abs(body["temperature"] - 0.15) < 1e-9
    assert body["top_k"] == 49  # the server's default 50, one step left
    assert body["max_tokens"] == 5 and body["seed"] == 1234
    answer = wait_answered(page)
    expect(answer.get_by_test_id("stats")).to_contain_text("5 tokens")


def test_parameters_persist_and_reset_to_server_defaults(page: Page, live_server) -> None:
    open_chat(page, live_server.url)
    defaults = httpx.get(live_server.url + "/v1/defaults").json()
    expect(page.locator("#param-top_p-number")).to_have_value(str(defaults["top_p"]))
    set_param(page, "top_p", 0.5)
    set_param(page, "repetition_penalty", 1.5)
    page.locator("#system-prompt").fill("You are terse.")
    page.reload()
    open_chat(page, live_server.url)
    expect(page.locator("#param-top_p")).to_have_value("0.5")
    expect(page.locator("#param-repetition_penalty-number")).to_have_value("1.5")

    page.get_by_test_id("reset-params").click()
    expect(page.locator("#param-top_p-number")).to_have_value(str(defaults["top_p"]))
    expect(page.locator("#param-repetition_penalty")).to_have_value(
        str(defaults["repetition_penalty"]))
    # The system prompt belongs to the chat: Reset leaves it alone.
    expect(page.locator("#system-prompt")).to_have_value("You are terse.")


PAYLOAD = (
    'Here: <img src=x onerror="window.__pwned=1;alert(1)"> and '
    "<script>window.__pwned=2;alert(2)</script> "
    "![pic](http://127.0.0.1:9/remote.png) [click](javascript:alert(3))\n\n"
    "```html\n<script>alert(4)</script>\n```\n\n"
    '<svg onload="alert(5)"></svg> <iframe src="javascript:alert(6)"></iframe> '
    '<a href="javascript:alert(7)">raw link</a> <javascript:alert(8)> '
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCg5KTwvc2NyaXB0Pg==) "
    '<style>body{background:url("http://127.0.0.1:9/bg.png")}</style>\n'
)


def scripted_stream(text: str) -> str:
    """An OpenAI-format SSE answer carrying ``text`` in a few chunks."""
    def frame(delta: dict, finish: str | None = None, **extra: object) -> str:
        chunk = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0,
                 "model": "scripted", "choices": [{"index": 0, "delta": delta,
                                                   "finish_reason": finish}], **extra}
        return f"data: {json.dumps(chunk)}\n\n"

    pieces = [text[i:i + 17] for i in range(0, len(text), 17)]
    usage = {"prompt_tokens": 3, "completion_tokens": len(pieces), "total_tokens": 3}
    return (frame({"role": "assistant", "content": ""})
            + "".join(frame({"content": p}) for p in pieces)
            + frame({}, "stop")
            + f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n")


def test_model_output_cannot_run_script_or_load_anything(browser, live_server) -> None:
    # bypass_csp: the server's Content-Security-Policy would block these too;
    # this proves the rendering itself is inert, without that safety net.
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    dialogs: list[str] = []
    requests: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    try:
        open_chat(page, live_server.url)
        page.route(GENERATE, lambda route: route.fulfill(
            status=200, headers={"Content-Type": "text/event-stream"},
            body=scripted_stream(PAYLOAD)))
        ask(page, "show me something")
        answer = wait_answered(page).locator("[data-testid=answer]")
        expect(answer).to_contain_text('<img src=x onerror="window.__pwned=1;alert(1)">')
        expect(answer).to_contain_text("<script>window.__pwned=2;alert(2)</script>")
        expect(answer.locator("pre code")).to_contain_text("<script>alert(4)</script>")
        page.wait_for_timeout(300)  # time for an onerror or onload to have fired
        assert dialogs == []
        assert page.evaluate("window.__pwned") is None
        assert answer.locator("img, script, iframe, svg").count() == 0
        assert not [u for u in requests if u.endswith(".png") or not u.startswith("http")]
        hrefs = answer.locator("a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
        assert all(h is None or h.lower().startswith(("http:", "https:")) for h in hrefs)
        expect(answer).to_contain_text('<a href="javascript:alert(7)">raw link</a>')
    finally:
        screenshot(page, "test_model_output_inert")
        context.close()
