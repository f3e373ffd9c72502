"""The report: a table for people (stdout) and the JSON document for machines.

The document's shape is ``report.schema.json`` (JSON Schema, shipped here);
the tests validate real runs against it.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def schema() -> dict[str, Any]:
    text = resources.files("starchart.bench").joinpath("report.schema.json").read_text("utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


COLUMNS = ("conc", "reqs", "ok", "errors", "req/s", "TTFT p50", "p90", "p99",
           "ITL p50", "p99", "tok/s/stream", "tok/s total", "tokens")


def render_table(doc: dict[str, Any]) -> str:
    target = doc["target"]
    run = doc["run"]
    lines = [
        f"server {target['url']}  model {target['model'] or '(server default)'}",
        f"{run['requests_per_level']} requests per level, max_tokens {run['max_tokens']},"
        f" temperature {run['temperature']:g}, prompts: {run['prompts']}"
        f" ({run['prompt_count']}); times in ms",
        "",
    ]
    rows = [COLUMNS]
    for level in doc["levels"]:
        ttft, itl, rate = level["ttft_ms"], level["inter_token_ms"], level["decode_tokens_per_s"]
        tokens = f"{level['completion_tokens']} ({level['token_source']})"
        rows.append((
            str(level["concurrency"]), str(level["requests"]), str(level["succeeded"]),
            str(sum(level["errors"].values())), _num(level["requests_per_s"], 2),
            _num(ttft["p50"]), _num(ttft["p90"]), _num(ttft["p99"]),
            _num(itl["p50"]), _num(itl["p99"]),
            _num(rate["per_stream_p50"]), _num(rate["aggregate"]), tokens,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        lines.append("  ".join(cell.rjust(width) for cell, width in zip(row, widths,
                                                                          strict=True)))
    for level in doc["levels"]:
        for kind, count in level["errors"].items():
            example = level["error_examples"].get(kind, "")
            lines.append(f"concurrency {level['concurrency']}: {count} × {kind}: {example}")
    return "\n".join(lines)


def render_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)
