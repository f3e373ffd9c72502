"""The benchmarks' shared command line (benchmarks/bench_args.py): every flag it makes
is explained in ``--help`` with its default, and one nobody explains is refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCH_ARGS = Path(__file__).parents[2] / "benchmarks" / "bench_args.py"


def bench_args() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_args", BENCH_ARGS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_explains_every_flag_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    module = bench_args()
    parser = module.bench_parser("First paragraph.\n\nNot in --help.", rounds=3, streams=8,
                                 explain={"streams": "concurrent streams"})
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "First paragraph." in text and "Not in --help" not in text
    assert f"--rounds ROUNDS {module.SHARED['rounds']} (default: 3)" in text
    assert "--streams STREAMS concurrent streams (default: 8)" in text
    assert text.endswith("--threads THREADS torch threads")  # no "(default: None)"
    assert vars(parser.parse_args(["--streams", "2"])) == {"rounds": 3, "streams": 2,
                                                         "threads": None}


def test_a_flag_nobody_explains_is_refused() -> None:
    module = bench_args()
    with pytest.raises(ValueError, match="--warm-ups needs an explanation"):
        module.bench_parser(None, warm_ups=1)
    with pytest.raises(ValueError, match="explained but not flags"):
        module.bench_parser(None, rounds=1, explain={"round": "a typo"})


def test_the_batching_benchmarks_use_it() -> None:
    # They built their own parsers, with most flags unexplained.
    for name in ("bench_llamacpp_batching.py", "bench_transformers_batching.py"):
        source = (BENCH_ARGS.parent / name).read_text()
        assert "bench_parser(__doc__" in source and "ArgumentParser(" not in source, name


