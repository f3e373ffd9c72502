"""The status page and the CLIP page, in a real browser against the real server."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from starchart.api.app import create_app
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port
from tests.vision.tiny_clip import build_clip


def test_status_page_shows_models_and_live_figures(page: Page, live_server) -> None:
    marks: list[str | None] = []  # X-Starchart-Poll of each read of /v1/stats
    page.on("request", lambda r: marks.append(r.headers.get("x-starchart-poll"))
            if r.url.endswith("/v1/stats") else None)
    page.goto(live_server.url + "/#/status")
    models = page.get_by_test_id("models")
    expect(models).to_contain_text("smollm2-135m-instruct")
    expect(models).to_contain_text("llamacpp")
    expect(models).to_contain_text("MiB")  # weight memory, in readable units
    expect(models).to_contain_text("loaded")
    live = page.get_by_test_id("live-stats")
    expect(live).to_contain_text("Requests in flight")
    # A request served elsewhere shows up in the page's live figures.
    httpx.post(live_server.url + "/v1/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "ignore_eos": True})
    expect(live.locator("div", has_text="Tokens generated").locator("dd")).to_have_text("3",
                                                                                     timeout=10_000)
    expect(live.locator("div", has_text="Requests served").locator("dd")).to_have_text("1")
    # The first read logs at INFO; the re-reads every 2 s (which showed the request) are
    # marked so that the server logs them at DEBUG.
    assert marks[0] is None and marks[1:] and set(marks[1:]) == {"1"}, marks
    if httpx.get(live_server.url + "/v1/doctor").status_code == 404:
        expect(page.get_by_test_id("doctor-note")).to_contain_text("starchart doctor")
    else:
        doctor = httpx.get(live_server.url + "/v1/doctor", timeout=60).json()
        expect(page.locator(".verdict")).to_have_text(f"Overall: {doctor['status']}")
        expect(page.locator(".checks li")).to_have_count(len(doctor["checks"]))


def test_clip_page_is_disabled_without_a_clip_model(page: Page, live_server) -> None:
    page.goto(live_server.url + "/#/clip")
    expect(page.get_by_test_id("clip-disabled")).to_contain_text("--clip MODEL")
    expect(page.get_by_test_id("classify")).to_be_disabled()
    expect(page.locator("#clip-labels")).to_be_disabled()


def png(width: int, height: int) -> bytes:
    """A small RGB gradient PNG, written by hand (no imaging library needed)."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, 96))
        for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The CLIP tests' builder: a random tiny CLIP with the real tokenizer.
    return build_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture
def clip_server(tiny_clip_folder: Path, settings: Settings, engine) -> Iterator[LiveServer]:
    """The real server with the tiny test CLIP model beside the chat model."""
    app = create_app(settings.model_copy(update={"clip": str(tiny_clip_folder)}),
                     engines=[engine])
    with LiveServer(app, free_port()) as server:
        yield server


def test_clip_page_classifies_an_image(page: Page, clip_server) -> None:
    image = png(64, 48)
    labels = ["a red square", "a photo of a dog", "a blue gradient"]
    page.goto(clip_server.url + "/#/clip")
    expect(page.get_by_test_id("classify")).to_be_disabled()  # no image yet
    page.get_by_test_id("clip-file").set_input_files(
        {"name": "gradient.png", "mimeType": "image/png", "buffer": image})
    expect(page.locator("img.preview")).to_be_visible()
    page.locator("#clip-labels").fill(", ".join(labels))
    page.get_by_test_id("classify").click()
    bars = page.get_by_test_id("clip-results").locator("li")
    expect(bars).to_have_count(3)

    # The page shows what the API answers for the same image, highest first.
    uri = "data:image/png;base64," + base64.b64encode(image).decode()
    answer = httpx.post(clip_server.url + "/v1/clip/classify", timeout=60,
                        json={"image": uri, "labels": labels}).json()["labels"]
    expected = sorted(answer, key=lambda r: -r["probability"])
    shown = [bars.nth(i).locator(".bar-label").inner_text() for i in range(3)]
    assert shown == [r["label"] for r in expected]
    top = bars.first.locator(".bar-value").inner_text()
    assert top == f"{expected[0]['probability'] * 100:.1f}%"

    # Dropping another image replaces the first and clears the old answer.
    other = base64.b64encode(png(32, 32)).decode()
    page.locator(".dropzone").evaluate("""(zone, b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true}));
    }""", other)
    expect(bars).to_have_count(0)
    page.get_by_test_id("classify").click()
    expect(bars).to_have_count(3)
