"""Side by side, one run: llama-cpp-python called directly vs starchart's server.

Same model file, same prompts, same threads and context, same number of new
tokens (end-of-sequence masked on both sides so each run decodes exactly
--max-tokens). Reports time-to-first-token and decode tokens/s (median over
rounds, the two paths alternating so machine noise hits both) and the ratio.

    .venv/bin/python benchmarks/bench_llamacpp_server.py [--rounds 5] [--max-tokens 128]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Iterable

import httpx
import numpy as np
from bench_args import bench_parser
from server_process import starchart_server

from starchart.engines.llamacpp import default_threads  # sets llama.cpp's OpenMP policy
from starchart.registry import EMBEDDED_NAME, embedded_gguf

PROMPTS = [
    "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nWrite a story about a lighthouse."
    "<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nExplain how rain forms.<|im_end|>\n"
    "<|im_start|>assistant\n",
    "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nDescribe the city of Paris.<|im_end|>\n"
    "<|im_start|>assistant\n",
]
SAMPLING = {"temperature": 0.2, "top_p": 0.95, "top_k": 50, "min_p": 0.0}


def measure(stream: Iterable[object]) -> tuple[float, float, int]:
    """(ttft seconds, decode tokens/s, tokens) from an iterator yielding one item per token."""
    start = time.perf_counter()
    first = last = None
    n = 0
    for _ in stream:
        now = time.perf_counter()
        first = first or now
        last = now
        n += 1
    assert first is not None and last is not None and n > 1
    return first - start, (n - 1) / (last - first), n


def raw_engine(llama,  # a llama_cpp.Llama
                eog: np.ndarray, prompt: str, max_tokens: int):
    def mask(_ids, scores):
        scores[eog] = -np.inf
        return scores

    for chunk in llama.create_completion(prompt, max_tokens=max_tokens, stream=True,
                                         repeat_penalty=1.2, logits_processor=[mask],
                                         **SAMPLING):
        if chunk["choices"][0]["text"]:
            yield chunk


def server_path(url: str, prompt: str, max_tokens: int):
    body = {"model": EMBEDDED_NAME, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
            "ignore_eos": True, "repetition_penalty": 1.2, **SAMPLING}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                if json.loads(line[6:])["choices"][0]["text"]:
                    yield line


def main() -> int:
    args = bench_parser(__doc__, rounds=5, max_tokens=128, n_ctx=2048).parse_args()
    import llama_cpp  # after starchart's engine module: same OpenMP settings on both sides

    threads = default_threads()

    with starchart_server("--n-ctx", str(args.n_ctx), "--threads", str(threads)) as url:
        llama = llama_cpp.Llama(model_path=str(embedded_gguf()), n_ctx=args.n_ctx,
                                n_threads=threads, n_threads_batch=threads, verbose=False)
        vocab = llama._model.vocab
        eog = np.array([t for t in range(llama.n_vocab())
                        if llama_cpp.llama_vocab_is_eog(vocab, t)], dtype=np.intc)
        # Warm both paths once.
        measure(raw_engine(llama, eog, PROMPTS[0], 16))
        measure(server_path(url, PROMPTS[0], 16))

        raw: list[tuple[float, float, int]] = []
        ours: list[tuple[float, float, int]] = []
        for r in range(args.rounds):
            for prompt in PROMPTS:
                raw.append(measure(raw_engine(llama, eog, prompt, args.max_tokens)))
                ours.append(measure(server_path(url, prompt, args.max_tokens)))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    def med(rows: list[tuple[float, float, int]], i: int) -> float:
        return statistics.median(row[i] for row in rows)

    ratio = med(ours, 1) / med(raw, 1)
    print(f"\nmodel {EMBEDDED_NAME} (Q4_1), {threads} threads, n_ctx {args.n_ctx},"
          f" {args.max_tokens} new tokens x {len(PROMPTS)} prompts x {args.rounds} rounds\n")
    print("| path | TTFT (ms, median) | decode tokens/s (median) |")
    print("|---|---|---|")
    print(f"| llama-cpp-python direct (create_completion, stream) | {med(raw, 0) * 1000:.1f} |"
          f" {med(raw, 1):.1f} |")
    print(f"| starchart server (HTTP SSE, /v1/completions) | {med(ours, 0) * 1000:.1f} |"
          f" {med(ours, 1):.1f} |")
    print(f"\nserver / direct decode tokens/s: {ratio:.3f} (target >= 0.95)")
    return 0 if ratio >= 0.95 else 1


if __name__ == "__main__":
    raise SystemExit(main())
