"""Continuous batching, side by side in one run: starchart vs llama-cpp-python's own server.

Both servers load the same GGUF with the same threads and context. Every request
has a unique prompt (no accidental prefix hits), is greedy and decodes exactly
--max-tokens (end-of-sequence masked on both sides). For 1, 4, 8 and 16
concurrent streams: aggregate tokens/s (all completion tokens / wall time) and
time to first token p50/p99. Then two measurements of starchart alone:

- single stream vs llama-cpp-python called directly (its own non-streamed chat
  call, same prompt, interleaved runs), with llama-cpp-python's own server beside
  them as the control;
- time to first token of turn 5 of a long conversation with prefix reuse (right
  after turn 4) and without (after --parallel unrelated requests evicted it);
- at temperature 0, how often a request's text beside 7 others equals its text
  alone (the engine in this process; 8 short answers and 8 long ones).

    .venv/bin/python benchmarks/bench_llamacpp_batching.py [--max-tokens 64] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
from bench_args import bench_parser
from server_process import free_port, starchart_server

from starchart.engines.base import SamplingParams, TextDelta
from starchart.engines.llamacpp import (  # sets llama.cpp's OpenMP policy
    LlamaCppEngine,
    default_threads,
)
from starchart.registry import EMBEDDED_NAME, embedded_gguf

TOPICS = ["a lighthouse", "how rain forms", "the city of Paris", "a dragon", "the moon",
          "an old library", "a river", "coffee", "a train journey", "winter", "a robot",
          "the ocean", "a garden", "mountains", "a clock", "music"]
STREAMS = (1, 4, 8, 16)


def prompt(i: int) -> str:
    # The request number first: no two prompts share more than the BOS token.
    return (f"{i}. <|im_start|>user\nWrite a story about {TOPICS[i % len(TOPICS)]}."
            "<|im_end|>\n<|im_start|>assistant\n")


def one_request(url: str, body: dict, out: list[tuple[float, int]]) -> None:
    start = time.perf_counter()
    first = None
    tokens = 0
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=900) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                if json.loads(line[6:])["choices"][0]["text"]:
                    first = first or time.perf_counter()
                    tokens += 1
    out.append(((first or time.perf_counter()) - start, tokens))


def concurrent(url: str, bodies: list[dict]) -> tuple[float, float, float]:
    """(aggregate tokens/s, TTFT p50 s, TTFT p99 s) of all ``bodies`` sent at once."""
    out: list[tuple[float, int]] = []
    threads = [threading.Thread(target=one_request, args=(url, b, out)) for b in bodies]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ttfts = sorted(t for t, _ in out)
    p99 = ttfts[min(len(ttfts) - 1, round(0.99 * (len(ttfts) - 1)))]
    return sum(n for _, n in out) / wall, statistics.median(ttfts), p99


@contextmanager
def llama_cpp_server(threads: int, n_ctx: int) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf()),
         "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads),
         "--host", "127.0.0.1", "--port", str(port), "--verbose", "false",
         # Its default cuts a running stream off when another request arrives.
         "--interrupt_requests", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("llama_cpp.server did not start"
                                 " (pip install 'llama-cpp-python[server]')")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def eog_ids() -> list[int]:
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = LlamaModel(path_model=str(embedded_gguf()), params=params, verbose=False)
    try:
        return [t for t in range(model.n_vocab()) if llama_cpp.llama_vocab_is_eog(model.vocab, t)]
    finally:
        model.close()


def batching_table(args: argparse.Namespace, threads: int) -> list[str]:
    eog = eog_ids()
    common = {"max_tokens": args.max_tokens, "temperature": 0, "stream": True}
    ours_body = {**common, "ignore_eos": True, "repetition_penalty": 1.0}
    theirs_body = {**common, "logit_bias": {str(t): -100 for t in eog}, "repeat_penalty": 1.0}
    results: dict[str, dict[int, tuple[float, float, float]]] = {"starchart": {},
                                                                "llama_cpp.server": {}}
    counter = iter(range(10**6))
    flags = ("--n-ctx", str(args.n_ctx), "--threads", str(threads),
             "--parallel", str(args.parallel))
    with starchart_server(*flags) as url:
        concurrent(url, [{**ours_body, "prompt": prompt(next(counter)), "max_tokens": 8}])
        for n in STREAMS:
            results["starchart"][n] = concurrent(
                url, [{**ours_body, "prompt": prompt(next(counter))} for _ in range(n)])
            print(f"starchart {n} streams: {results['starchart'][n]}", file=sys.stderr)
    with llama_cpp_server(threads, args.n_ctx) as url:
        concurrent(url, [{**theirs_body, "prompt": prompt(next(counter)), "max_tokens": 8}])
        for n in STREAMS:
            results["llama_cpp.server"][n] = concurrent(
                url, [{**theirs_body, "prompt": prompt(next(counter))} for _ in range(n)])
            print(f"llama_cpp.server {n} streams: {results['llama_cpp.server'][n]}",
                  file=sys.stderr)
    rows = ["| server | streams | aggregate tokens/s | TTFT p50 (ms) | TTFT p99 (ms) |",
            "|---|---|---|---|---|"]
    for name, by_n in results.items():
        for n, (tps, p50, p99) in by_n.items():
            rows.append(f"| {name} | {n} | {tps:.1f} | {p50 * 1000:.0f} | {p99 * 1000:.0f} |")
    ours, theirs = results["starchart"], results["llama_cpp.server"]
    rows.append("")
    rows.append(f"starchart 8 streams / 1 stream: {ours[8][0] / ours[1][0]:.2f}x (target >= 1.6);"
                f" starchart / llama_cpp.server at 8 streams: {ours[8][0] / theirs[8][0]:.2f}x"
                " (target >= 2.2)")
    return rows


def single_stream(args: argparse.Namespace, threads: int) -> list[str]:
    """Non-streamed chat, one at a time, interleaved: llama-cpp-python called directly (in
    this process), our server and llama-cpp-python's own server (each its own process),
    and our engine called in this process (its per-token path without HTTP).

    Its own server is the control: on a shared machine a server process can lose to an
    in-process call for reasons that are not its per-token code (the report says which).
    """
    import llama_cpp

    messages = [{"role": "system", "content": ""},
                {"role": "user", "content": "Write a story about a lighthouse."}]
    n = args.max_tokens * 2
    llama = llama_cpp.Llama(model_path=str(embedded_gguf()), n_ctx=args.n_ctx,
                            n_threads=threads, n_threads_batch=threads, verbose=False)
    vocab = llama._model.vocab
    eog_list = [t for t in range(llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    eog = np.array(eog_list, dtype=np.intc)

    def mask(_ids, scores):
        scores[eog] = -np.inf
        return scores

    def direct() -> float:
        start = time.perf_counter()
        out = llama.create_chat_completion(messages, max_tokens=n, temperature=0,
                                           repeat_penalty=1.0, logits_processor=[mask])
        return out["usage"]["completion_tokens"] / (time.perf_counter() - start)

    def post(url: str, body: dict) -> float:
        start = time.perf_counter()
        out = httpx.post(url + "/v1/chat/completions", timeout=600,
                         json={"messages": messages, "max_tokens": n, "temperature": 0,
                               **body}).json()
        return out["usage"]["completion_tokens"] / (time.perf_counter() - start)

    engine = LlamaCppEngine(EMBEDDED_NAME, embedded_gguf(), n_ctx=args.n_ctx, threads=threads,
                            parallel=args.parallel)
    engine.load()
    params = SamplingParams(temperature=0, max_tokens=n, repetition_penalty=1.0, ignore_eos=True)

    def in_process() -> float:
        async def drain() -> None:
            async for _ in engine.stream_chat(messages, params):
                pass

        start = time.perf_counter()
        asyncio.run(drain())
        return n / (time.perf_counter() - start)

    ours_body = {"repetition_penalty": 1.0, "ignore_eos": True}
    theirs_body = {"repeat_penalty": 1.0, "logit_bias": {str(t): -100 for t in eog_list}}
    runs: list[tuple[float, float, float, float, float]] = []
    with starchart_server("--n-ctx", str(args.n_ctx), "--threads", str(threads),
                          "--parallel", str(args.parallel)) as ours_url, \
            llama_cpp_server(threads, args.n_ctx) as theirs_url:
        direct()
        post(ours_url, ours_body)
        post(theirs_url, theirs_body)
        in_process()
        for _ in range(max(3, args.rounds)):
            load = os.getloadavg()[0]
            runs.append((direct(), post(ours_url, ours_body), post(theirs_url, theirs_body),
                         in_process(), load))
            print("single stream (direct, starchart, llama_cpp.server, engine in process,"
                  " load):", [round(x, 1) for x in runs[-1]], file=sys.stderr)
    llama.close()
    engine.close()
    d, ours, theirs, engine_alone = (statistics.median(r[i] for r in runs) for i in range(4))
    loads = [r[4] for r in runs]
    return [f"single stream, non-streamed chat, {n} tokens, medians of {len(runs)} interleaved"
            f" rounds (load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs):"
            f" llama-cpp-python direct {d:.1f} tokens/s; starchart {ours:.1f} ({ours / d:.3f}"
            f" of direct, target >= 0.97); llama_cpp.server {theirs:.1f} ({theirs / d:.3f});"
            f" starchart / llama_cpp.server {ours / theirs:.3f}; our engine called in this"
            f" process (no HTTP) {engine_alone:.1f} ({engine_alone / d:.3f} of direct)"]


def prefix_reuse(args: argparse.Namespace, threads: int) -> list[str]:
    """TTFT of turn 5 right after turn 4 (cells resident) vs after they were evicted."""
    paragraph = ("Here is some background about my garden, the plants in it, the weather"
                 " this year and the tools I use every weekend. ") * 6

    def ttft(url: str, messages: list[dict]) -> tuple[float, str]:
        start = time.perf_counter()
        first, text = None, ""
        body = {"messages": messages, "max_tokens": 48, "temperature": 0, "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body,
                          timeout=600) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
                    if delta:
                        first = first or time.perf_counter()
                        text += delta
        return (first or time.perf_counter()) - start, text

    hits, misses = [], []
    with starchart_server("--n-ctx", str(args.n_ctx), "--threads", str(threads),
                          "--parallel", str(args.parallel)) as url:
        for r in range(max(3, args.rounds)):
            messages = [{"role": "system", "content": ""}]
            for turn in range(1, 5):
                messages.append({"role": "user",
                                 "content": f"Conversation {r}, turn {turn}. {paragraph}"})
                _, answer = ttft(url, messages)
                messages.append({"role": "assistant", "content": answer})
            messages.append({"role": "user", "content": f"Turn 5. {paragraph}"})
            hit, _ = ttft(url, messages)
            for i in range(args.parallel):  # unrelated requests take every slot
                ttft(url, [{"role": "user", "content": f"{i} {r} Name a color."}])
            miss, _ = ttft(url, messages)
            hits.append(hit)
            misses.append(miss)
    a, b = statistics.median(hits), statistics.median(misses)
    return [f"prefix reuse, TTFT of turn 5 (~{len(json.dumps(messages)) // 4} tokens of history):"
            f" {a * 1000:.0f} ms with reuse, {b * 1000:.0f} ms without: {b / a:.1f}x faster"]


def determinism(args: argparse.Namespace, threads: int) -> list[str]:
    """Greedy text of 8 questions alone vs beside 7 others (the engine, in this process)."""
    questions = [f"Explain in detail {topic}." for topic in (
        "how rain forms", "how a bicycle works", "why the sky is blue", "how bread rises",
        "how a compass works", "why leaves change color", "how a lighthouse works",
        "how tides work")]
    short = ["What is the capital of France?", "What is two plus two?", "Name a color.",
             "Name a fruit.", "What is the largest ocean?", "What is the capital of Italy?",
             "Name the capital of Germany.", "What is the capital of Spain?"]
    engine = LlamaCppEngine(EMBEDDED_NAME, embedded_gguf(), n_ctx=args.n_ctx, threads=threads,
                            parallel=args.parallel)
    engine.load()

    async def text(question: str, params: SamplingParams) -> str:
        out = ""
        async for event in engine.stream_chat(
                [{"role": "system", "content": ""}, {"role": "user", "content": question}],
                params):
            if isinstance(event, TextDelta):
                out += event.text
        return out

    async def together(qs: list[str], params: SamplingParams) -> list[str]:
        return list(await asyncio.gather(*(text(q, params) for q in qs)))

    lines = []
    try:
        for name, qs, n in (("short answers", short, 32),
                            ("'Explain in detail'", questions, args.max_tokens)):
            params = SamplingParams(temperature=0, max_tokens=n)
            alone = [asyncio.run(text(q, params)) for q in qs]
            same = total = 0
            forks = []
            for _ in range(max(2, args.rounds)):
                for a, b in zip(alone, asyncio.run(together(qs, params)), strict=True):
                    same += a == b
                    total += 1
                    if a != b:
                        forks.append(_common_chars(a, b))
            lines.append(f"temperature 0, {name} ({n} tokens), 8 at once vs alone:"
                         f" {same}/{total} texts identical"
                         + (f"; differing texts agree for their first {sorted(forks)} characters"
                            if forks else ""))
    finally:
        engine.close()
    return lines


def _common_chars(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main() -> int:
    parser = bench_parser(__doc__, rounds=1, max_tokens=64, n_ctx=2048, parallel=8, explain={
        "rounds": "rounds of the single-stream, prefix-reuse and determinism measurements"
                  " (at least 3, 3 and 2; the batching table is measured once)",
        "max_tokens": "new tokens per request (the single stream decodes twice as many)",
        "parallel": "sequences starchart's llama.cpp engine decodes at once (serve"
                    " --parallel), and the unrelated requests that evict a conversation"})
    parser.add_argument("--only", choices=["batching", "single", "prefix", "determinism"],
                        help="run this measurement alone (default: all four)")
    args = parser.parse_args()
    threads = default_threads()
    lines = [f"model {EMBEDDED_NAME} (Q4_1), {threads} threads, n_ctx {args.n_ctx}, --parallel"
             f" {args.parallel}, {args.max_tokens} new tokens per request, greedy", ""]
    if args.only in (None, "batching"):
        lines += [*batching_table(args, threads), ""]
    if args.only in (None, "single"):
        lines += [*single_stream(args, threads), ""]
    if args.only in (None, "prefix"):
        lines += [*prefix_reuse(args, threads), ""]
    if args.only in (None, "determinism"):
        lines += determinism(args, threads)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
