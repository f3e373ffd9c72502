"""Samples of one concurrency level -> the level's figures (the JSON ``levels[]`` item)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from starchart.bench.client import Sample


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ms(values: Sequence[float], *qs: int) -> dict[str, float | None]:
    out = {}
    for q in qs:
        value = percentile(values, q)
        out[f"p{q}"] = None if value is None else round(value * 1000, 2)
    return out


def _rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def token_source(samples: Sequence[Sample]) -> str:
    sources: set[str] = {s.token_source for s in samples if s.ok and s.token_source}
    if not sources:
        return "none"
    return sources.pop() if len(sources) == 1 else "mixed"


def summarize(concurrency: int, samples: Sequence[Sample]) -> dict[str, Any]:
    """One level: what the report's table row and the JSON ``levels[]`` item hold."""
    good = [s for s in samples if s.ok]
    errors = Counter(s.error for s in samples if not s.ok)
    examples: dict[str, str] = {}
    for s in samples:
        if s.error is not None and s.error not in examples:
            examples[s.error] = s.detail or ""
    wall = (max(s.ended for s in samples) - min(s.sent for s in samples)) if samples else 0.0
    completion = sum(s.completion_tokens or 0 for s in good)
    prompt_known = [s.prompt_tokens for s in good if s.prompt_tokens is not None]
    ttfts = [t for s in good if (t := s.ttft) is not None]
    gaps = [g for s in good for g in s.inter_token]
    rates = [r for s in good if (r := s.decode_rate) is not None]
    return {
        "concurrency": concurrency,
        "requests": len(samples),
        "succeeded": len(good),
        "errors": dict(sorted(errors.items())),
        "error_examples": examples,
        "duration_s": round(wall, 3),
        "requests_per_s": _rounded(len(good) / wall if wall > 0 else None, 3),
        "ttft_ms": _ms(ttfts, 50, 90, 99),
        "inter_token_ms": _ms(gaps, 50, 99),
        "decode_tokens_per_s": {
            "per_stream_p50": _rounded(percentile(rates, 50)),
            "aggregate": _rounded(completion / wall if wall > 0 and good else None),
        },
        "prompt_tokens": sum(prompt_known) if len(prompt_known) == len(good) and good else None,
        "completion_tokens": completion,
        "token_source": token_source(samples),
    }
