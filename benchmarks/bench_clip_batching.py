"""CLIP dynamic batching: 32 single-image requests at once vs one request with 32 images.

Starts ``starchart serve --clip FOLDER`` and sends the same 32 images
(640x480 JPEG) to ``POST /v1/embeddings`` two ways, alternating rounds so
machine noise hits both:

- batched: one request whose ``input`` holds all 32 images;
- concurrent: 32 requests of one image each, all in flight together, which the
  server's dynamic batcher gathers into shared forward passes.

Reports images/s (median over rounds) and concurrent / batched (target >= 0.8).
With ``--compare-unbatched`` a second server with ``--clip-max-batch 1`` shows
what the batcher buys.

No model hub is reachable here, so by default the CLIP is built locally with
random weights: ``--shape b32`` has openai/clip-vit-base-patch32's architecture
(its compute, ~150M parameters), ``--shape tiny`` is the tests' toy. Speed does
not depend on the weights' values. ``--clip FOLDER_OR_HUB_ID`` uses a real one.

    .venv/bin/python benchmarks/bench_clip_batching.py [--shape b32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import statistics
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
from server_process import starchart_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' CLIP builder and image maker

from tests.vision.helpers import make_image  # noqa: E402
from tests.vision.tiny_clip import build_clip  # noqa: E402

N_IMAGES = 32


def server(clip: str, max_batch: int, max_wait_ms: float) -> AbstractContextManager[str]:
    return starchart_server("--clip", clip, "--clip-max-batch", str(max_batch),
                            "--clip-max-wait-ms", str(max_wait_ms),
                            "--clip-max-images", str(N_IMAGES))


def payloads() -> list[str]:
    uris = []
    for i in range(N_IMAGES):
        buffer = io.BytesIO()
        make_image(640, 480, 100 + i).save(buffer, format="JPEG", quality=90)
        uris.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode())
    return uris


async def one_request(client: httpx.AsyncClient, images: list[str]) -> float:
    start = time.perf_counter()
    response = await client.post("/v1/embeddings", json={"input": images})
    response.raise_for_status()
    assert len(response.json()["data"]) == len(images)
    return len(images) / (time.perf_counter() - start)


async def concurrent_requests(client: httpx.AsyncClient, images: list[str]) -> float:
    async def single(uri: str) -> None:
        response = await client.post("/v1/embeddings", json={"input": [uri]})
        response.raise_for_status()

    start = time.perf_counter()
    await asyncio.gather(*(single(uri) for uri in images))
    return len(images) / (time.perf_counter() - start)


async def image_passes(client: httpx.AsyncClient) -> int:
    """Image forward passes the server has run so far."""
    models = (await client.get("/v1/models")).json()["data"]
    return next(m for m in models if m["kind"] == "clip")["batching"]["images"]["batches"]


async def measure(url: str, images: list[str], rounds: int
                  ) -> tuple[list[float], list[float], float]:
    """images/s of each way per round, and the concurrent way's images per forward pass."""
    limits = httpx.Limits(max_connections=N_IMAGES, max_keepalive_connections=N_IMAGES)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await one_request(client, images)  # warm up both paths (and open the connections)
        await concurrent_requests(client, images)
        batched, concurrent, passes = [], [], 0
        for r in range(rounds):
            batched.append(await one_request(client, images))
            before = await image_passes(client)
            concurrent.append(await concurrent_requests(client, images))
            passes += await image_passes(client) - before
            print(f"round {r + 1}/{rounds}: batched {batched[-1]:.1f} images/s,"
                  f" concurrent {concurrent[-1]:.1f} images/s", file=sys.stderr)
    return batched, concurrent, rounds * len(images) / passes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=["tiny", "b32"], default="b32",
                        help="random CLIP to build when --clip is not given")
    parser.add_argument("--clip", help="a CLIP folder or cached hub id instead of a random one")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-wait-ms", type=float, default=50.0)
    parser.add_argument("--compare-unbatched", action="store_true",
                        help="also run a server with --clip-max-batch 1")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="starchart-bench-clip-model-") as folder:
        if args.clip:
            clip, what = args.clip, args.clip
        else:
            print(f"building a random CLIP ({args.shape}) ...", file=sys.stderr)
            clip = str(build_clip(Path(folder), args.shape))
            what = {"tiny": "tiny random CLIP (2 layers, width 32)",
                    "b32": "random CLIP with ViT-B/32's architecture"}[args.shape]
        images = payloads()
        with server(clip, N_IMAGES, args.max_wait_ms) as url:
            batched, concurrent, per_pass = asyncio.run(measure(url, images, args.rounds))
        unbatched: list[float] = []
        if args.compare_unbatched:
            with server(clip, 1, 0) as url:
                _, unbatched, _ = asyncio.run(measure(url, images, args.rounds))

    med_b, med_c = statistics.median(batched), statistics.median(concurrent)
    ratio = med_c / med_b
    print(f"\n{what}; {N_IMAGES} JPEG images 640x480; POST /v1/embeddings;"
          f" clip_max_batch {N_IMAGES}, clip_max_wait_ms {args.max_wait_ms};"
          f" {os.cpu_count()} CPU cores; median of {args.rounds} rounds\n")
    print("| how the 32 images are sent | images/s |")
    print("|---|---|")
    print(f"| one request with 32 images | {med_b:.1f} |")
    print(f"| 32 concurrent requests, 1 image each (dynamic batching; {per_pass:.1f} images"
          f" per forward pass) | {med_c:.1f} |")
    if unbatched:
        print(f"| 32 concurrent requests, batching off (clip_max_batch 1) |"
              f" {statistics.median(unbatched):.1f} |")
    print(f"\nconcurrent / one request: {ratio:.2f} (target >= 0.8)")
    return 0 if ratio >= 0.8 else 1


if __name__ == "__main__":
    raise SystemExit(main())
