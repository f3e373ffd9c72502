"""starchart_clip_images_encoded_total moves by the images a known run sent."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from starchart.api.app import create_app
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port
from tests.metrics.test_metrics import delta, scrape
from tests.scripted_engine import scripted
from tests.vision.helpers import data_uri, encode, make_image
from tests.vision.tiny_clip import build_clip


def test_clip_images_encoded(tmp_path: Path) -> None:
    folder = build_clip(tmp_path / "tiny-clip")
    settings = Settings(home=tmp_path / "home", clip=str(folder))
    app = create_app(settings, engines=[scripted("answer")])
    uris = [data_uri(encode(make_image(64, 48, seed))) for seed in range(3)]
    with LiveServer(app, free_port(), wait_ready=False) as server, \
            httpx.Client(base_url=server.url, timeout=180) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # CLIP loads in the background
            try:
                if client.get("/ready").status_code == 200:
                    break
            except httpx.HTTPError:  # a busy machine: the loader holds the GIL a while
                pass
            time.sleep(0.2)
        model = app.state.clip.clip.info.id
        before = scrape(server.url)
        one = client.post("/v1/embeddings", json={"input": [uris[0]]})
        two = client.post("/v1/embeddings", json={"input": [uris[1], uris[2], "a cat"]})
        assert one.status_code == two.status_code == 200, two.text
        after = scrape(server.url)
    assert delta(before, after, "starchart_clip_images_encoded_total", model=model) == 3
