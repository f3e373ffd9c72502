"""The web page's cost on streaming: the same answer read by the page vs by the API.

One `starchart serve` (the real CLI, embedded model) on loopback; each round
asks the same question twice, alternating: once over the API with httpx
(SSE, as any client) and once through the chat page in headless Chromium,
timed inside the page from the Enter key to each change of the answer's
text. Both sides decode exactly --max-tokens tokens (end-of-sequence ignored).
Reports time-to-first-token and decode tokens/s (medians) and page/API ratios,
plus how long the page takes to load until it can chat.

    STARCHART_THREADS=1 .venv/bin/python benchmarks/bench_web_page.py --rounds 5 --max-tokens 128

(The server's settings come from the environment; one thread keeps a busy
2-core machine's noise out of both sides alike.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import httpx
from playwright.sync_api import Page, Route, sync_playwright
from server_process import starchart_server

QUESTION = "Write a story about a lighthouse."
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-gpu", "--no-first-run"]
# In the page: the Enter key's time, then a timestamp at each change of the answer.
TIMING = """() => {
  window.__t = {enter: 0, changes: []};
  document.querySelector('#prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter') window.__t = {enter: performance.now(), changes: []};
  }, {capture: true});
  new MutationObserver(() => {
    const a = [...document.querySelectorAll('[data-role=assistant]')].pop();
    if (a && a.dataset.streaming === 'true' && a.querySelector('[data-testid=answer]').textContent)
      window.__t.changes.push(performance.now());
  }).observe(document.querySelector('.messages'),
             {subtree: true, childList: true, characterData: true, attributes: true});
}"""



def api_round(client: httpx.Client, max_tokens: int) -> tuple[float, float]:
    body = {"messages": [{"role": "system", "content": ""}, {"role": "user", "content": QUESTION}],
            "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    start = time.perf_counter()
    times: list[float] = []
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get(
                    "content"):
                times.append(time.perf_counter())
    return times[0] - start, (max_tokens - 1) / (times[-1] - times[0])


def page_round(page: Page, max_tokens: int) -> tuple[float, float]:
    page.get_by_test_id("new-chat").click()
    page.locator("#prompt").fill(QUESTION)
    page.locator("#prompt").press("Enter")
    page.locator("[data-role=assistant][data-streaming=false]").wait_for(timeout=300_000)
    t = page.evaluate("window.__t")
    first, last = t["changes"][0], t["changes"][-1]
    return (first - t["enter"]) / 1000, (max_tokens - 1) / ((last - first) / 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    with starchart_server("--n-ctx", "2048") as url:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                 args=CHROMIUM_ARGS)
            page = browser.new_page()
            loads = []
            for _ in range(3):
                start = time.perf_counter()
                page.goto(url + "/")
                page.locator("#model-picker option").first.wait_for(state="attached")
                loads.append(time.perf_counter() - start)

            def exact_length(route: Route) -> None:
                body = route.request.post_data_json
                body.update(ignore_eos=True, max_tokens=args.max_tokens)
                route.continue_(post_data=json.dumps(body))

            page.route("**/v1/chat/completions", exact_length)
            page.evaluate(TIMING)
            api, web = [], []
            # A kept-alive connection on both sides, as the browser keeps its own.
            with httpx.Client(base_url=url, timeout=300) as client:
                for _ in range(args.rounds):
                    api.append(api_round(client, args.max_tokens))
                    web.append(page_round(page, args.max_tokens))
            browser.close()

    def med(rows: list[tuple[float, float]], i: int) -> float:
        return statistics.median(r[i] for r in rows)

    print(f"rounds={args.rounds} max_tokens={args.max_tokens}")
    print(f"page load until it can chat: {statistics.median(loads) * 1000:.0f} ms (median of 3)")
    print(f"time to first token: API {med(api, 0) * 1000:.0f} ms, page {med(web, 0) * 1000:.0f} ms,"
          f" page/API {med(web, 0) / med(api, 0):.2f}")
    print(f"decode tokens/s: API {med(api, 1):.1f}, page {med(web, 1):.1f},"
          f" page/API {med(web, 1) / med(api, 1):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
