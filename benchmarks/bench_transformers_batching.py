"""Batching on the transformers engine: 1 stream vs N concurrent streams, and
starchart's server vs calling transformers' ``generate_batch`` directly.

The embedded SmolLM2-135M (its GGUF, de-quantized to fp32 by transformers) is
served by ``starchart serve --engine transformers`` in a subprocess; streams
are OpenAI chat completions over HTTP (SSE), end-of-sequence ignored so every
stream decodes exactly --max-tokens. Aggregate tokens/s = all tokens of all
streams / wall time from the first request to the last token. Then, with the
server stopped, the same model in this process runs ``generate_batch`` on the
same prompts with the same sampling (temperature/top-k/top-p, no penalty) and
the same KV-cache setup as the engine (without it, ``generate_batch`` sizes its
cache from free memory, gigabytes here, and is slower still).
Rounds alternate the two paths so machine noise hits both; medians reported.

    .venv/bin/python benchmarks/bench_transformers_batching.py [--rounds 3] [--streams 8]
        [--threads N]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from contextlib import AbstractContextManager

import httpx
from bench_args import bench_parser
from server_process import starchart_server

from starchart.engines.hf_loading import locate
from starchart.engines.transformers import batching_config
from starchart.registry import EMBEDDED_NAME

QUESTIONS = ["Write a story about a lighthouse.", "Explain how rain forms.",
             "Describe the city of Paris.", "What is a black hole?"]
SAMPLING = {"temperature": 0.7, "top_p": 0.9, "top_k": 50}


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": ""},
            {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]


def server(n_ctx: int, threads: int | None) -> AbstractContextManager[str]:
    return starchart_server("--engine", "transformers", "--n-ctx", str(n_ctx),
                            *(["--threads", str(threads)] if threads else []))


async def one_stream(client: httpx.AsyncClient, i: int, max_tokens: int) -> int:
    body = {"model": EMBEDDED_NAME, "messages": messages(i), "max_tokens": max_tokens,
            "stream": True, "ignore_eos": True, "repetition_penalty": 1.0,
            "stream_options": {"include_usage": True}, **SAMPLING}
    tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    tokens = usage["completion_tokens"]
    return tokens


async def served(url: str, streams: int, max_tokens: int) -> float:
    """Aggregate tokens/s of ``streams`` concurrent HTTP streams."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        start = time.perf_counter()
        counts = await asyncio.gather(*[one_stream(client, i, max_tokens)
                                        for i in range(streams)])
        elapsed = time.perf_counter() - start
    assert all(c == max_tokens for c in counts), counts
    return sum(counts) / elapsed


class Direct:
    """The same model in this process, through ``generate_batch``."""

    def __init__(self, n_ctx: int) -> None:
        self.n_ctx = n_ctx
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = locate(EMBEDDED_NAME)
        self.tokenizer = AutoTokenizer.from_pretrained(source.folder, gguf_file=source.gguf_file)
        self.model = AutoModelForCausalLM.from_pretrained(
            source.folder, gguf_file=source.gguf_file, dtype="float32").eval()

    def run(self, streams: int, max_tokens: int) -> float:
        from transformers import GenerationConfig

        inputs = [list(self.tokenizer.apply_chat_template(
            messages(i), add_generation_prompt=True, tokenize=True)["input_ids"])
            for i in range(streams)]
        config = GenerationConfig(do_sample=True, max_new_tokens=max_tokens, eos_token_id=-1,
                                  pad_token_id=0, **SAMPLING)
        start = time.perf_counter()
        results = self.model.generate_batch(
            inputs, generation_config=config,
            continuous_batching_config=batching_config(self.n_ctx, 8, "cpu"))
        elapsed = time.perf_counter() - start
        counts = [len(r.generated_tokens) for r in results.values()]
        assert len(counts) == streams and all(c == max_tokens for c in counts), counts
        return sum(counts) / elapsed


def main() -> int:
    parser = bench_parser(__doc__, rounds=3, streams=8, max_tokens=64, n_ctx=1024, explain={
        "rounds": "rounds, each running the four paths in turn; medians are reported",
        "streams": "concurrent streams measured against one",
        "max_tokens": "new tokens per stream (end-of-sequence ignored)"})
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads on both sides (default: torch's, all cores)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    direct = Direct(args.n_ctx)
    rows: dict[str, list[float]] = {"server 1": [], f"server {args.streams}": [],
                                    "direct 1": [], f"direct {args.streams}": []}
    with server(args.n_ctx, args.threads) as url:
        asyncio.run(served(url, 2, 8))  # warm up
        direct.run(2, 8)
        for r in range(args.rounds):
            rows["server 1"].append(asyncio.run(served(url, 1, args.max_tokens)))
            rows[f"server {args.streams}"].append(
                asyncio.run(served(url, args.streams, args.max_tokens)))
            rows["direct 1"].append(direct.run(1, args.max_tokens))
            rows[f"direct {args.streams}"].append(direct.run(args.streams, args.max_tokens))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{k} {v[-1]:.1f}" for k, v in rows.items()), file=sys.stderr)

    med = {k: statistics.median(v) for k, v in rows.items()}
    n = args.streams
    scaling = med[f"server {n}"] / med["server 1"]
    vs_direct = med[f"server {n}"] / med[f"direct {n}"]
    print(f"\nmodel {EMBEDDED_NAME} via transformers (GGUF de-quantized to fp32, CPU,"
          f" torch threads {__import__('torch').get_num_threads()}), {args.max_tokens} new"
          f" tokens per stream, median of {args.rounds} rounds\n")
    print("| path | 1 stream (tokens/s) | " f"{n} streams (aggregate tokens/s) | scaling |")
    print("|---|---|---|---|")
    print(f"| starchart server (HTTP SSE, /v1/chat/completions) | {med['server 1']:.1f} |"
          f" {med[f'server {n}']:.1f} | {scaling:.2f}x |")
    print(f"| transformers `generate_batch` direct | {med['direct 1']:.1f} |"
          f" {med[f'direct {n}']:.1f} | {med[f'direct {n}'] / med['direct 1']:.2f}x |")
    print(f"\nserver {n} streams / server 1 stream: {scaling:.2f} (target >= 1.8)")
    print(f"server / generate_batch at {n} streams: {vs_direct:.2f} (target >= 0.9)")
    return 0 if scaling >= 1.8 and vs_direct >= 0.9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
