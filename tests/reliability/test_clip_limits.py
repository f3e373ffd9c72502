"""CLIP limits at the issue's scale, on a real `starchart serve --clip` process with the
default limits: 10,000 labels, a real 20,000 x 20,000 PNG and a decompression bomb
(a tiny file whose header claims 60,000 x 60,000 pixels) each get a fast 400, with
the server's peak memory (VmHWM) measured around them."""

from __future__ import annotations

import base64
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.test_store_durability import ServeProcess
from tests.reliability.conftest import peak_rss_bytes
from tests.vision.helpers import data_uri, encode, make_image, png_claiming_size
from tests.vision.tiny_clip import build_clip


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data)))


def black_png(width: int, height: int) -> bytes:
    """A valid greyscale PNG of ``width`` x ``height`` black pixels, compressed row by row
    (the file is small; decoding it would take width x height bytes)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data)
            + _chunk(b"IEND", b""))


def test_clip_limits_are_fast_400s_with_memory_bounded(
        serve: Callable[..., ServeProcess], report: Callable[[str, str], None],
        tmp_path: Path) -> None:
    clip = build_clip(tmp_path / "tiny-clip")
    server = serve("--clip", str(clip), ready_timeout=180)
    assert server.proc is not None
    pid = server.proc.pid
    small = data_uri(encode(make_image(32, 32, seed=1)))
    huge = black_png(20_000, 20_000)
    figures: list[str] = [f"the 20,000 x 20,000 PNG is {len(huge) / 2**10:.0f} KiB"]
    cases = [
        ("10,000-label request", {"image": small, "labels": [f"label {i}" for i in range(10_000)]},
         "labels"),
        ("20,000 x 20,000 PNG", {"image": data_uri(huge), "labels": ["cat", "dog"]}, "image"),
        ("decompression bomb (header claims 60,000 x 60,000)",
         {"image": "data:image/png;base64,"
          + base64.b64encode(png_claiming_size(60_000, 60_000)).decode(),
          "labels": ["cat", "dog"]}, "image"),
    ]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        ok = client.post("/v1/clip/classify", json={"image": small, "labels": ["cat", "dog"]})
        assert ok.status_code == 200, ok.text
        peak = peak_rss_bytes(pid)
        for name, body, param in cases:
            started = time.monotonic()
            response = client.post("/v1/clip/classify", json=body)
            seconds = time.monotonic() - started
            assert response.status_code == 400, (name, response.text)
            assert response.json()["error"]["param"] == param, (name, response.text)
            assert seconds < 10, (name, seconds)
            now = peak_rss_bytes(pid)
            # Decoding the 20,000 x 20,000 image would take 400 MB (1.2 GB as RGB).
            assert now - peak < 100 * 2**20, (name, now - peak)
            figures.append(f"{name}: 400 in {seconds * 1000:.0f} ms, peak RSS"
                           f" +{(now - peak) / 2**20:.0f} MiB")
            peak = now
        assert client.get("/health").status_code == 200
    report("CLIP limits", "; ".join(figures))
