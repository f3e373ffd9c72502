"""The command line of a benchmark: its docstring's first paragraph as ``--help``, and
whole-number flags with defaults (``max_tokens=128`` is ``--max-tokens``, default 128)."""

from __future__ import annotations

import argparse


def bench_parser(doc: str | None, **whole_numbers: int) -> argparse.ArgumentParser:
    """A parser with those flags; add the benchmark's other flags to it."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    for name, default in whole_numbers.items():
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=default)
    return parser
