"""Structured output on the batched llama.cpp engine: tokens/s with a 10-field schema vs without.

The engine is driven in this process (no HTTP: the constraint's cost is what is
measured), with the embedded model and ``--parallel 8``. For 1 and 8 concurrent
streams, rounds alternate:

- constrained: each stream asks for a person as JSON under a 10-field schema
  (``response_format`` json_schema), greedy, until the object closes;
- unconstrained: the same prompts, greedy, ``ignore_eos``, each stream decoding
  exactly as many tokens as its constrained answer had (same work, no grammar).

Aggregate tokens/s = all completion tokens / wall time; the ratio is constrained /
unconstrained (target >= 0.8). Also: compile time of a fresh 10-field schema
(schema check + llguidance grammar + matcher, caches defeated by a new property
name each time), and where a constrained step's time goes (the grammar's mask
vs the rest), from timers around ``Constraint``'s two calls.

    .venv/bin/python benchmarks/bench_structured_batching.py [--rounds 3]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench_args import bench_parser
from bench_structured_libraries import schema_with

from starchart.engines.base import Finish, SamplingParams
from starchart.engines.llamacpp import LlamaCppEngine, default_threads
from starchart.registry import EMBEDDED_NAME, embedded_gguf
from starchart.structured import decoding
from starchart.structured.grammar import schema_grammar

FIELDS = 10


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": ""},
            {"role": "user", "content": f"Describe person number {i} as JSON."}]


class Timers:
    """Seconds spent in ``Constraint.mask_logits`` and ``Constraint.advance``."""

    def __init__(self) -> None:
        self.mask = self.advance = 0.0
        self.calls = 0

    def install(self) -> None:
        def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any) -> Any:
                start = time.perf_counter()
                try:
                    return fn(*args)
                finally:
                    setattr(self, name, getattr(self, name) + time.perf_counter() - start)
                    if name == "mask":
                        self.calls += 1
            return wrapper

        cls = decoding.Constraint
        cls.mask_logits = timed("mask", cls.mask_logits)  # type: ignore[method-assign]
        cls.advance = timed("advance", cls.advance)  # type: ignore[method-assign]

    def reset(self) -> None:
        self.mask = self.advance = 0.0
        self.calls = 0


def run(engine: LlamaCppEngine, jobs: list[tuple[list[dict[str, str]], SamplingParams]]
        ) -> tuple[float, list[int], list[str], float]:
    """(tokens/s, completion tokens per stream, texts, wall seconds) of jobs run at once."""

    async def one(msgs: list[dict[str, str]], params: SamplingParams) -> tuple[int, str]:
        text, tokens = "", 0
        async for event in engine.stream_chat(msgs, params):
            if isinstance(event, Finish):
                tokens = event.usage.completion_tokens
            else:
                text += event.text
        return tokens, text

    async def all_of() -> list[tuple[int, str]]:
        return await asyncio.gather(*(one(m, p) for m, p in jobs))

    start = time.perf_counter()
    out = asyncio.run(all_of())
    wall = time.perf_counter() - start
    counts = [n for n, _ in out]
    return sum(counts) / wall, counts, [t for _, t in out], wall


def compile_seconds(engine: LlamaCppEngine, rounds: int) -> tuple[float, float]:
    """Medians: (a schema never seen, the same schema sent again) -> a sequence's matcher."""
    assert engine.structured is not None
    fresh, again = [], []
    for i in range(max(3, rounds)):
        schema = schema_with(FIELDS)
        schema["properties"][f"fresh_{time.monotonic_ns()}_{i}"] = {"type": "integer"}
        for times in (fresh, again):
            start = time.perf_counter()
            engine.structured.start(schema_grammar(schema, param="response_format"))
            times.append(time.perf_counter() - start)
    return statistics.median(fresh), statistics.median(again)


def main() -> int:
    args = bench_parser(__doc__, rounds=3, max_tokens=256, parallel=8).parse_args()
    threads = default_threads()
    engine = LlamaCppEngine(EMBEDDED_NAME, embedded_gguf(), n_ctx=1024, threads=threads,
                            parallel=args.parallel)
    engine.load()
    timers = Timers()
    timers.install()
    grammar = schema_grammar(schema_with(FIELDS), param="response_format")
    base = SamplingParams(temperature=0, max_tokens=args.max_tokens, repetition_penalty=1.0)
    lines = [f"model {EMBEDDED_NAME}, {threads} threads, --parallel {args.parallel},"
             f" {FIELDS}-field schema, greedy, {args.rounds} interleaved rounds", ""]
    try:
        engine.structured.start(grammar)  # type: ignore[union-attr]  # llguidance's tokenizer
        fresh, again = compile_seconds(engine, args.rounds)
        lines.append(f"compile a fresh {FIELDS}-field schema (check + grammar + matcher):"
                     f" {fresh * 1000:.1f} ms; the same schema again: {again * 1000:.2f} ms"
                     f" (medians; load average {os.getloadavg()[0]:.1f})")
        counter = iter(range(10**6))
        for streams in (1, args.parallel):
            got: dict[str, list[float]] = {"schema": [], "none": []}
            mask_share: list[float] = []
            loads: list[float] = []
            for r in range(args.rounds + 1):  # round 0 warms up
                ids = [next(counter) for _ in range(streams)]
                timers.reset()
                tps, counts, texts, wall = run(
                    engine, [(messages(i), base.replace(grammar=grammar)) for i in ids])
                for text in texts:
                    json.loads(text)  # a finished constrained answer always parses
                mask_seconds = timers.mask + timers.advance
                free, *_ = run(engine, [(messages(i), base.replace(max_tokens=n, ignore_eos=True))
                                        for i, n in zip(ids, counts, strict=True)])
                if r:
                    got["schema"].append(tps)
                    got["none"].append(free)
                    mask_share.append(mask_seconds / wall)
                    loads.append(os.getloadavg()[0])
                    print(f"{streams} streams round {r}: schema {tps:.1f}, none {free:.1f}"
                          f" tokens/s, constraint {mask_seconds * 1000 / max(1, timers.calls):.2f}"
                          f" ms per token", file=sys.stderr)
            s, n = statistics.median(got["schema"]), statistics.median(got["none"])
            ratios = [a / b for a, b in zip(got["schema"], got["none"], strict=True)]
            lines.append(
                f"{streams} stream(s): with schema {s:.1f} tokens/s, without {n:.1f}:"
                f" {statistics.median(ratios):.2f} (per round {[round(x, 2) for x in ratios]};"
                f" target >= 0.8); the grammar's mask + advance took"
                f" {statistics.median(mask_share) * 100:.1f}% of the constrained wall time"
                f" (load average {min(loads):.1f}-{max(loads):.1f})")
    finally:
        engine.close()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
