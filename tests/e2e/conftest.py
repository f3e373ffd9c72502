"""Browser fixtures: Debian's Chromium, headless, driven by Playwright.

Every test gets a fresh browser context (empty localStorage) and leaves a
screenshot in ``test-artifacts/``. No display is needed. When Chromium is
missing the tests skip on a developer's machine and fail in CI, loudly.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

if os.environ.get("CI"):
    from playwright import sync_api  # in CI a missing Playwright is a failure, not a skip
else:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")

from tests.e2e.artifacts import screenshot  # needs playwright, checked just above

CHROMIUM_ARGS = [
    "--no-sandbox",
    # This machine's network is closed: Chromium's own background traffic
    # (updates, sync, safe browsing) only produces refused connections.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--no-first-run",
]


def chromium_path() -> str:
    path = os.environ.get("STARCHART_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        message = (f"Chromium not found at {path}: `make test` installs it (apt-get install"
                   " chromium) when run as root; or set STARCHART_CHROMIUM")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


# Module scope, not session: Playwright's sync API keeps an event loop running
# while it is open, and any later test calling asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                              args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class PageWatch:
    """What the page did that a test may want to assert on."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def context_options() -> dict[str, object]:
    return {"viewport": {"width": 1280, "height": 860}}


@pytest.fixture
def page(browser: sync_api.Browser, context_options: dict[str, object], live_server,
         request: pytest.FixtureRequest) -> Iterator[sync_api.Page]:
    # Depending on live_server makes the page close first: a server stopping
    # under the browser's open connections would wait out its grace period.
    context = browser.new_context(**context_options)
    page = context.new_page()
    page.set_default_timeout(30_000)
    watch = PageWatch()
    page.watch = watch  # type: ignore[attr-defined]

    def on_dialog(dialog: sync_api.Dialog) -> None:
        watch.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: watch.errors.append(str(exc)))
    page.on("request", lambda req: watch.requests.append(req.url))
    try:
        yield page
    finally:
        try:
            # A test that stops its own server closes the page first (and shoots it).
            if not page.is_closed():
                screenshot(page, request.node.nodeid.split("::", 1)[-1])
        finally:
            context.close()
