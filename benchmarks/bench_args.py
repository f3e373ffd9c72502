"""The command line of a benchmark: its docstring's first paragraph as ``--help``, and
whole-number flags with defaults (``max_tokens=128`` is ``--max-tokens``, default 128).

Every flag is explained in ``--help``, with its default: the names benchmarks share
(rounds, new tokens, context, parallel sequences) by ``SHARED`` below unless the
benchmark words its own (``explain={"rounds": ...}``), any other name by the
benchmark; a flag nobody explains is an error when the parser is built.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

SHARED = {
    "rounds": "measured rounds; medians are reported",
    "max_tokens": "new tokens per request",
    "n_ctx": "context length the model is loaded with",
    "parallel": "sequences the llama.cpp engine decodes at once (serve --parallel)",
}


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Each explanation ends with the flag's default, unless there is none (None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def bench_parser(doc: str | None, *, explain: Mapping[str, str] | None = None,
                 **whole_numbers: int) -> argparse.ArgumentParser:
    """A parser with those flags; add the benchmark's other flags to it, each with a
    ``help`` (the defaults are appended to every explanation)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                     formatter_class=_Defaults)
    explain = explain or {}
    unknown = set(explain) - set(whole_numbers)
    if unknown:
        raise ValueError(f"explained but not flags: {sorted(unknown)}")
    for name, default in whole_numbers.items():
        text = explain.get(name) or SHARED.get(name)
        if text is None:
            raise ValueError(f"--{name.replace('_', '-')} needs an explanation: explain={{...}}")
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=default, help=text)
    return parser
