"""The remote engine's cost, one run: a client talking to an upstream directly vs
through a starchart front (`--upstream`), side by side.

The upstream is a `starchart serve` process with the embedded model (it honours
ignore_eos, so every stream decodes exactly --max-tokens); the front is a second
process relaying to it (the upstream decodes on --upstream-threads, default 1,
leaving a core to the front on a small machine). Rounds alternate direct / front so
machine noise hits both. Reported per concurrency (1 and 8 streams at once): TTFT p50
and aggregate decode tokens/s, and front/direct; the TTFT added round by round (each
front round minus the direct one just before it: median and quartiles); and, for one
stream, the upstream's own decode speed during the front's rounds (its ``/v1/stats``):
the client's speed over it shows whether the relay keeps up with what the upstream
produces, apart from the CPU the front's process takes from the upstream on a small
machine; and the front's own CPU time per request and per token relayed (from /proc). The
load average is printed before and after.

A third path, when Debian's nginx is installed, is the same upstream behind nginx as a
plain reverse proxy (kept-alive upstream connections, no buffering): a relay that does
nothing but relay, written in C, measured the same way as starchart's.

Last, the relays' own latency, apart from the engine's batching: the same paths to an
upstream that answers at once (``instant_upstream.py``): how long a request takes to
reach the upstream ("forwarded") and its answer to reach the client (TTFT), for the
same numbers of concurrent streams.

    .venv/bin/python benchmarks/bench_remote_passthrough.py [--rounds 5] [--no-nginx]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time

import httpx
import nginx_relay
from instant_upstream import MODEL as INSTANT
from instant_upstream import instant_upstream
from server_process import cpu_seconds, starchart_child, starchart_server

from starchart.registry import EMBEDDED_NAME

QUESTIONS = ["Write a story about a lighthouse.", "Explain how rain forms.",
             "Describe the city of Paris.", "List some fruits."]


async def one_stream(client: httpx.AsyncClient, model: str, question: str,
                     max_tokens: int) -> tuple[float, float, float, int]:
    """(start, first token, last token, tokens) of one streamed chat completion."""
    body = {"model": model, "stream": True, "max_tokens": max_tokens, "ignore_eos": True,
            "temperature": 0.2, "messages": [{"role": "user", "content": question}]}
    start = time.perf_counter()
    first = last = None
    n = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
                n += 1
    assert first is not None and last is not None and n > 1, "no tokens streamed"
    return start, first, last, n


async def measure(url: str, model: str, streams: int, max_tokens: int
                  ) -> tuple[float, float]:
    """(TTFT p50 seconds, aggregate decode tokens/s) of ``streams`` concurrent streams."""
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        runs = await asyncio.gather(*(one_stream(client, model, QUESTIONS[i % len(QUESTIONS)],
                                                 max_tokens) for i in range(streams)))
    ttft = statistics.median(first - start for start, first, _, _ in runs)
    decoded = sum(n - 1 for *_, n in runs)
    span = max(last for _, _, last, _ in runs) - min(first for _, first, _, _ in runs)
    return ttft, decoded / span


async def one_instant(client: httpx.AsyncClient, model: str) -> tuple[float, float]:
    """(forwarded, TTFT) of one streamed request to an instant upstream: how long the
    request took to reach the upstream, and its one chunk to reach the client."""
    body = {"model": model, "stream": True, "max_tokens": 8,
            "messages": [{"role": "user", "content": QUESTIONS[0]}]}
    start = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                arrived = json.loads(line[6:])["arrived"]
                return arrived - start, time.perf_counter() - start
    raise AssertionError("no chunk streamed")


async def instant_round(client: httpx.AsyncClient | None, url: str, streams: int
                        ) -> tuple[float, float]:
    """Medians over ``streams`` concurrent requests: (forwarded, TTFT). On ``client``'s
    kept-alive connections, or (None) on new ones made for this round."""
    if client is None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as fresh:
            return await instant_round(fresh, url, streams)
    runs = await asyncio.gather(*(one_instant(client, INSTANT) for _ in range(streams)))
    return (statistics.median(f for f, _ in runs), statistics.median(t for _, t in runs))


async def instant_rounds(paths: dict[str, str], streams: int, rounds: int, front_pid: int,
                         kept_alive: bool) -> tuple[dict[str, list[tuple[float, float]]], float]:
    """(forwarded, TTFT) of each round on each path, alternating; and the front's CPU
    seconds over its rounds."""
    clients = {name: httpx.AsyncClient(base_url=url, timeout=60) if kept_alive else None
               for name, url in paths.items()}
    got: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    front_cpu = 0.0
    try:
        for name, url in paths.items():
            await instant_round(clients[name], url, streams)  # warm up
        for _ in range(rounds):
            for name, url in paths.items():
                before = cpu_seconds(front_pid) if name == "front" else 0.0
                got[name].append(await instant_round(clients[name], url, streams))
                if name == "front":
                    front_cpu += cpu_seconds(front_pid) - before
    finally:
        for client in clients.values():
            if client is not None:
                await client.aclose()
    return got, front_cpu


def relay_latency(paths: dict[str, str], streams_list: list[int], rounds: int,
                  front_pid: int) -> None:
    """The relays' own latency: the same paths to an upstream that answers at once,
    each round on new connections (a client per request, as curl) and on kept-alive
    ones (as an SDK's client, or the page); and the front's CPU time per request."""
    for kept_alive in (False, True):
        connections = "kept-alive connections" if kept_alive else "new connections each round"
        print(f"{'streams':>7}  {'path':<7}{'forwarded p50':>15}{'TTFT p50':>10}"
              f"   (an instant upstream: the relay's own latency; {connections})")
        for streams in streams_list:
            got, front_cpu = asyncio.run(
                instant_rounds(paths, streams, rounds, front_pid, kept_alive))
            for name, runs in got.items():
                print(f"{streams:>7}  {name:<7}"
                      f"{statistics.median(f for f, _ in runs) * 1000:>13.2f}ms"
                      f"{statistics.median(t for _, t in runs) * 1000:>8.2f}ms")
            for relay in (name for name in paths if name != "direct"):
                added = [(r[1] - d[1]) * 1000
                         for d, r in zip(got["direct"], got[relay], strict=True)]
                print(f"{streams:>7}  {relay}: TTFT added, round by round: median"
                      f" {statistics.median(added):+.2f} ms")
            print(f"{streams:>7}  the front's CPU time: {front_cpu / (rounds * streams) * 1000:.2f}"
                  " ms per request")


def model_upstream(args: argparse.Namespace, nginx: bool) -> None:
    """Client -> upstream decoding the embedded model, directly and through each relay."""
    # The upstream decodes on one thread: the other core is left to the relay and the
    # client, so the comparison measures the relay, not a fight for the CPU.
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(starchart_server(
            "--n-ctx", "2048", "--threads", str(args.upstream_threads)))
        front_child = stack.enter_context(starchart_child(
            "--n-ctx", "2048", "--upstream", f"up={upstream}",
            "--upstream-model", f"up={EMBEDDED_NAME}"))
        front, front_pid = front_child.url, front_child.pid
        paths = {"direct": (upstream, EMBEDDED_NAME), "front": (front, "up")}
        if nginx:
            paths["nginx"] = (stack.enter_context(nginx_relay.nginx_relay(upstream)),
                              EMBEDDED_NAME)
        for url, model in paths.values():  # warm up every path (and the KV cache)
            asyncio.run(measure(url, model, 1, 8))
        print(f"{'streams':>7}  {'path':<7}{'TTFT p50':>10}{'tok/s':>9}")
        for streams in args.streams:
            got: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
            kept_up: list[float] = []  # client tok/s over the upstream's own, through the front
            front_cpu = 0.0  # the front's own CPU time over its rounds
            for _ in range(args.rounds):
                for name, (url, model) in paths.items():
                    before = cpu_seconds(front_pid) if name == "front" else 0.0
                    got[name].append(asyncio.run(measure(url, model, streams,
                                                         args.max_tokens)))
                    if name == "front":
                        front_cpu += cpu_seconds(front_pid) - before
                    upstream_speed = httpx.get(upstream + "/v1/stats").json()[
                        "last_tokens_per_second"]
                    if name == "front" and streams == 1 and upstream_speed:
                        kept_up.append(got[name][-1][1] / upstream_speed)
            med = {name: (statistics.median(t for t, _ in runs),
                          statistics.median(s for _, s in runs)) for name, runs in got.items()}
            for name, (ttft, speed) in med.items():
                print(f"{streams:>7}  {name:<7}{ttft * 1000:>8.1f}ms{speed:>9.1f}")
            for relay in (name for name in paths if name != "direct"):
                added = (med[relay][0] - med["direct"][0]) * 1000
                ratio = med[relay][1] / med["direct"][1]
                print(f"{streams:>7}  {relay}/direct: tokens/s x{ratio:.3f}, TTFT +{added:.1f} ms"
                      f" (targets: >= 0.97, < 5 ms)")
                # Each relayed round ran right after a direct one: their difference cancels
                # the machine's drift, which moves both medians by more than a relay costs.
                paired = sorted((r[0] - d[0]) * 1000 for d, r in zip(got["direct"], got[relay],
                                                                    strict=True))
                quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
                print(f"{streams:>7}  {relay}: TTFT added, round by round: median"
                      f" {statistics.median(paired):+.1f} ms (quartiles {quartiles[0]:+.1f}"
                      f" / {quartiles[2]:+.1f} ms)")
            relayed = args.rounds * streams
            print(f"{streams:>7}  the front's CPU time: {front_cpu / relayed * 1000:.2f} ms per"
                  f" request, {front_cpu / (relayed * args.max_tokens) * 1000:.3f} ms per"
                  " token relayed (everything included)")
            if kept_up:
                print(f"{streams:>7}  through the front, client tok/s / the upstream's own"
                      f" decode tok/s: x{statistics.median(kept_up):.3f}")


def instant(args: argparse.Namespace, nginx: bool) -> None:
    """The same paths to an upstream that answers at once: the relays' own latency."""
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(instant_upstream())
        front = stack.enter_context(starchart_child(
            "--load-on-demand", "--upstream", f"{INSTANT}={upstream}"))
        relays = {"direct": upstream, "front": front.url}
        if nginx:
            relays["nginx"] = stack.enter_context(nginx_relay.nginx_relay(upstream))
        relay_latency(relays, args.streams, args.instant_rounds, front.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds per path against the model upstream (0: skip that part)")
    parser.add_argument("--max-tokens", type=int, default=64,
                        help="tokens per stream from the model upstream (it ignores EOS)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8],
                        help="numbers of concurrent streams to measure")
    parser.add_argument("--upstream-threads", type=int, default=1,
                        help="decode threads of the model upstream (the rest of the cores"
                        " is left to the relay and the client)")
    parser.add_argument("--no-nginx", action="store_true",
                        help="leave out the nginx peer relay (used when /usr/sbin/nginx exists)")
    parser.add_argument("--instant-rounds", type=int, default=60,
                        help="rounds per path against the instant upstream (0: skip that part)")
    args = parser.parse_args()

    nginx = not args.no_nginx and nginx_relay.available()
    if not args.no_nginx and not nginx:
        print("nginx not found: the peer relay is left out (apt-get install nginx)")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if args.rounds:
        model_upstream(args, nginx)
    if args.instant_rounds:
        instant(args, nginx)
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

if __name__ == "__main__":
    main()
