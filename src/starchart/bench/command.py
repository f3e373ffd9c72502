"""``starchart bench``: the CLI around ``runner``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starchart.errors import BadRequest
from starchart.settings import Settings

if TYPE_CHECKING:
    from starchart.bench.runner import BenchConfig

# Settings that shape the server bench starts itself (without --url), and its timeout.
SETTINGS = ("model", "engine", "n_ctx", "threads", "device", "dtype", "quantize",
            "chat_template", "trust_remote_code", "bench_timeout")


def _levels(value: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,4,8, got {value!r}")
    return levels


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def add_bench_command(sub: Any, add_setting_flags: Callable[..., None]
                      ) -> Callable[[argparse.Namespace, Settings], int]:
    bench = sub.add_parser(
        "bench", help="measure an OpenAI-compatible server (ours by default) under load",
        description="Send streaming chat requests at each concurrency level and report"
        " requests/s, time to first token, inter-token latency and tokens/s (table on stdout,"
        " progress on stderr). Without --url, starts `starchart serve` with --model on a free"
        " loopback port and stops it afterwards.")
    bench.add_argument("--url", help="base URL of the server to measure, e.g."
                       " http://127.0.0.1:8080 (requests go to URL/v1/chat/completions)")
    bench.add_argument("--concurrency", type=_levels, default=(1, 4, 8), metavar="N[,N...]",
                       help="concurrency levels, in order [default: 1,4,8]")
    bench.add_argument("--requests", type=_positive, default=16, metavar="N",
                       help="requests per concurrency level [default: 16]")
    bench.add_argument("--max-tokens", type=_positive, default=128, metavar="T",
                       help="max_tokens of each request [default: 128]")
    bench.add_argument("--temperature", type=float, default=0.0,
                       help="temperature of each request [default: 0]")
    bench.add_argument("--warmup", type=int, default=1, metavar="N",
                       help="requests sent first and not counted [default: 1]")
    bench.add_argument("--prompts", type=Path, metavar="FILE",
                       help="a JSON prompt set shaped like the default one, or a text file"
                       " with one prompt per line [default: the set shipped in starchart]")
    bench.add_argument("--api-key", metavar="KEY", help="sent as 'Authorization: Bearer KEY'")
    bench.add_argument("--json", action="store_true",
                       help="print one JSON document (schema: starchart/bench/"
                       "report.schema.json) instead of the table")
    bench.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no progress bar on stderr")
    add_setting_flags(bench, only=SETTINGS)
    return run


def run(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here, not at the top: they pull in httpx, which `starchart --help`
    # and the other commands must not pay for.
    from starchart.bench.own_server import own_server
    from starchart.bench.prompts import load_prompts
    from starchart.bench.report import render_json, render_table
    from starchart.bench.runner import BenchConfig

    if args.warmup < 0:
        raise BadRequest("--warmup must be 0 or more", param="warmup")
    prompts = load_prompts(args.prompts)

    def config(url: str, model: str | None, self_started: bool) -> BenchConfig:
        return BenchConfig(
            url=url, model=model, concurrency=args.concurrency, requests=args.requests,
            max_tokens=args.max_tokens, temperature=args.temperature,
            timeout=settings.bench_timeout, prompts=prompts,
            prompts_source=str(args.prompts) if args.prompts else "default",
            api_key=args.api_key, warmup=args.warmup, self_started=self_started,
            progress=args.progress)

    if args.url is None:
        with own_server(settings) as url:
            base = config(url, None, True)
            doc = asyncio.run(_measure(base, named=None))
    else:
        # --model is a setting (a list, repeatable for `serve`): bench sends one name.
        named = settings.default_model if args.model else None
        doc = asyncio.run(_measure(config(args.url, None, False), named=named))
    print(render_json(doc) if args.json else render_table(doc))
    return 0


async def _measure(config: BenchConfig, named: str | None) -> dict[str, Any]:
    from starchart.bench.runner import BenchConfig, discover_model, run_bench  # see run()

    model = named or await discover_model(config)
    if model is None:
        print("starchart bench: GET /v1/models named no model: requests name none",
              file=sys.stderr)
    return await run_bench(BenchConfig(**{**config.__dict__, "model": model}))
