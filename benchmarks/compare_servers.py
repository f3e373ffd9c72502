"""Side by side, one run: `starchart bench` against starchart and its peers.

Same GGUF file (the embedded SmolLM2-135M-Instruct Q4_1), same prompts (bench's
default set, in the same order), same max tokens, temperature 0, one server at a
time on this machine:

- starchart, llama.cpp engine          vs  llama-cpp-python's server
- starchart, transformers engine       vs  `transformers serve`
  (the GGUF loaded through transformers, de-quantized to fp32)

each at every --concurrency level. Prints a Markdown table (ratios ours/peer per
cell) and, with --readme, writes it into README.md between the
``compare_servers`` markers.

    .venv/bin/python benchmarks/compare_servers.py [--requests 8] [--max-tokens 32] \\
        [--concurrency 1,8] [--threads 2] [--readme]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from starchart.bench.own_server import free_port, own_server, server_process
from starchart.errors import StarchartError
from starchart.registry import EMBEDDED_NAME, embedded_gguf
from starchart.settings import Settings

README = Path(__file__).parents[1] / "README.md"
START, END = "<!-- compare_servers:start -->", "<!-- compare_servers:end -->"

# (label in the table, key in a bench level, digits, True when higher is better)
METRICS = [
    ("requests/s", ("requests_per_s",), 2, True),
    ("TTFT p50 ms", ("ttft_ms", "p50"), 0, False),
    ("TTFT p99 ms", ("ttft_ms", "p99"), 0, False),
    ("inter-token p50 ms", ("inter_token_ms", "p50"), 1, False),
    ("decode tok/s per stream p50", ("decode_tokens_per_s", "per_stream_p50"), 1, True),
    ("tok/s aggregate", ("decode_tokens_per_s", "aggregate"), 1, True),
]


@contextmanager
def peer_process(argv: list[str], port: int) -> Iterator[str]:
    """A peer server on ``port``: ready once it lists its models."""
    with tempfile.TemporaryDirectory(prefix="peer-") as folder, server_process(
            argv, f"http://127.0.0.1:{port}", log=Path(folder) / "server.log",
            ready_path="/v1/models", timeout=600) as url:
        yield url


Start = Callable[[argparse.Namespace], AbstractContextManager[tuple[str, str]]]


@contextmanager
def llama_cpp_server(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    port = free_port()
    with peer_process(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf()),
             "--model_alias", EMBEDDED_NAME, "--host", "127.0.0.1", "--port", str(port),
             "--n_ctx", str(args.n_ctx), "--n_threads", str(args.threads),
             "--n_threads_batch", str(args.threads),
             # Its default cuts a running stream short (with [DONE]) as soon as another
             # request waits: at concurrency > 1 its streams would be one or two tokens long.
             "--interrupt_requests", "False"], port) as url:
        yield url, EMBEDDED_NAME


def gguf_as_folder(folder: Path) -> None:
    """The embedded GGUF de-quantized by transformers (as our transformers engine does in
    memory), saved as a checkpoint folder: `transformers serve` cannot load a GGUF itself
    (its GGUF config has no `architectures`: TypeError at load)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Loaded from a GGUF, the model counts as "quantized with gguf" and refuses to save;
    # its tensors are plain fp32 by now.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@contextmanager
def transformers_serve(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent))
    if exe is None:
        raise RuntimeError("the `transformers` command is not installed")
    with tempfile.TemporaryDirectory(prefix="smollm2-fp32-") as folder:
        gguf_as_folder(Path(folder))
        port = free_port()
        with peer_process([exe, "serve", "--host", "127.0.0.1", "--port", str(port),
                           "--device", "cpu", folder], port) as url:
            yield url, folder


def ours(engine: Literal["llamacpp", "transformers"]) -> Start:
    @contextmanager
    def start(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
        settings = Settings(model=EMBEDDED_NAME, engine=engine, n_ctx=args.n_ctx,
                            threads=args.threads)
        with own_server(settings) as url:
            yield url, EMBEDDED_NAME
    return start


# (column, how to start it); PAIRS: (ours, its peer) for the ratio columns.
SERVERS: list[tuple[str, Start]] = [
    ("starchart (llama.cpp)", ours("llamacpp")),
    ("llama-cpp-python server", llama_cpp_server),
    ("starchart (transformers)", ours("transformers")),
    ("transformers serve", transformers_serve),
]
PAIRS = [("starchart (llama.cpp)", "llama-cpp-python server"),
         ("starchart (transformers)", "transformers serve")]


def bench(url: str, model: str, args: argparse.Namespace) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "starchart", "bench", "--url", url, "--model", model,
         "--concurrency", args.concurrency, "--requests", str(args.requests),
         "--max-tokens", str(args.max_tokens), "--temperature", "0", "--warmup", "1",
         "--bench-timeout", str(args.timeout), "--json", "--no-progress"],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def pick(level: dict, key: tuple[str, ...]) -> float | None:
    value = level
    for part in key:
        value = value[part]
    return value  # type: ignore[return-value]


def fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def ratio(ours_: float | None, peer: float | None, higher_better: bool) -> str:
    if not ours_ or not peer:
        return "–"
    r = ours_ / peer
    lose = r < 0.95 if higher_better else r > 1.05
    return f"**{r:.2f}** ⚠" if lose else f"{r:.2f}"


def table(results: dict[str, dict | str], levels: list[int]) -> tuple[str, list[str]]:
    names = [name for name, _ in SERVERS]
    head = ["conc.", "metric", *names, *(f"{a.split(' ')[1].strip('()')} ours/peer"
                                         for a, _ in PAIRS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    losses = []
    for i, conc in enumerate(levels):
        rows = [("errors", None, 0, True), ("completion tokens", "tokens", 0, True), *METRICS]
        for label, key, digits, higher in rows:
            cells = [str(conc), label]
            values: dict[str, float | None] = {}
            for name in names:
                doc = results[name]
                if isinstance(doc, str):
                    cells.append("did not run")
                    values[name] = None
                    continue
                level = doc["levels"][i]
                if key is None:
                    errors = sum(level["errors"].values())
                    cells.append(f"{errors}/{level['requests']}")
                    values[name] = None
                elif key == "tokens":  # the same work? and where the count came from
                    cells.append(f"{level['completion_tokens']} ({level['token_source']})")
                    values[name] = None
                else:
                    values[name] = pick(level, key)
                    cells.append(fmt(values[name], digits))
            for a, b in PAIRS:
                cell = "" if key in (None, "tokens") else ratio(values[a], values[b], higher)
                cells.append(cell)
                if "⚠" in cell:
                    losses.append(f"{a} vs {b} at concurrency {conc}: {label} {cell[2:6]}×")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), losses


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()};" \
           f" load average at start {load}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--only", help="comma-separated column names to run (others: skipped)")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = machine()
    results: dict[str, dict | str] = {}
    for name, start in SERVERS:
        if args.only and name not in args.only.split(","):
            results[name] = "skipped"
            continue
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            with start(args) as (url, model):
                results[name] = bench(url, model, args)
        except (StarchartError, RuntimeError, subprocess.CalledProcessError) as exc:
            why = getattr(exc, "stderr", None) or str(exc)
            results[name] = why.strip().splitlines()[-1] if why.strip() else repr(exc)
            print(f"   {name} did not run: {why}", file=sys.stderr, flush=True)
    raw = Path(tempfile.gettempdir()) / "compare_servers.json"
    raw.write_text(json.dumps(results, indent=1), "utf-8")
    print(f"raw bench documents: {raw}", file=sys.stderr)
    body, losses = table(results, levels)
    command = "`.venv/bin/python benchmarks/compare_servers.py " + " ".join(sys.argv[1:]) + "`"
    failed = [f"- {name}: did not run ({why})" for name, why in results.items()
              if isinstance(why, str)]
    versions = ", ".join(f"{p} {version(p)}" for p in ("starchart", "llama-cpp-python",
                                                         "transformers", "torch"))
    text = "\n".join([
        START,
        f"Run {started} with {command}: {args.requests} requests per level, max_tokens"
        f" {args.max_tokens}, temperature 0, bench's default prompts, {args.threads} threads"
        f" per server, n_ctx {args.n_ctx}, one server at a time.",
        f"Machine: {where}. Versions: {versions}.",
        "",
        body,
        "",
        "Ratios are ours / peer on the same row; ⚠ and bold mark where we lose by more than"
        " 5% (for times, lower is better).",
        *(["", "Where we lose:", *(f"- {loss}" for loss in losses)] if losses else []),
        *(["", *failed] if failed else []),
        END,
    ])
    print(text)
    if args.readme:
        readme = README.read_text("utf-8")
        if START in readme and END in readme:
            before, rest = readme.split(START, 1)
            readme = before + text + rest.split(END, 1)[1]
            README.write_text(readme, "utf-8")
        else:
            print("README.md has no compare_servers markers: not written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
