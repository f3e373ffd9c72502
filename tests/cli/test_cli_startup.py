"""The CLI starts fast: `--help` and the light commands import no heavy library.

Each command runs in a fresh interpreter with ``-X importtime``, which names on
stderr every module the process imported; a module list, not a wall time, so
the test does not depend on how busy the machine is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# What made `import starchart.cli` take 0.6-4 s: the engines (torch, transformers,
# llama.cpp), the store (SQLAlchemy), the server (FastAPI, uvicorn, Starlette),
# the HTTP client and numpy; and the gguf package (~90 ms, numpy included), which
# `models list` imported to name a GGUF's file type. Only the commands that use
# them may import them.
HEAVY = frozenset({"torch", "transformers", "llama_cpp", "sqlalchemy", "fastapi", "uvicorn",
                   "starlette", "httpx", "numpy", "PIL", "huggingface_hub", "gguf"})


def modules_of(*args: str, home: Path) -> set[str]:
    """The full names of the modules `python -m starchart ARGS` imports."""
    env = {**os.environ, "STARCHART_HOME": str(home)}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "starchart", *args],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert len(lines) > 50, done.stderr[-2000:]  # -X importtime did report
    return {line.rsplit("|", 1)[1].strip() for line in lines}


def imported_by(*args: str, home: Path) -> set[str]:
    """Top-level names of the modules `python -m starchart ARGS` imports."""
    return {name.split(".")[0] for name in modules_of(*args, home=home)}


@pytest.mark.parametrize("args", [
    ["--help"], ["serve", "--help"], ["chat", "--help"], ["clip", "--help"],
    ["bench", "--help"], ["doctor", "--help"], ["keys", "list", "--help"],
    ["models", "--help"],
])
def test_help_imports_no_heavy_library(args: list[str], tmp_path: Path) -> None:
    modules = imported_by(*args, home=tmp_path)
    assert "starchart" in modules and "pydantic" in modules  # the list is real
    assert modules & HEAVY == set()


def test_keys_list_imports_the_store_and_nothing_heavier(tmp_path: Path) -> None:
    modules = imported_by("keys", "list", home=tmp_path)
    assert "sqlalchemy" in modules
    assert modules & HEAVY == {"sqlalchemy"}


def test_models_list_reads_headers_with_nothing_heavy(tmp_path: Path) -> None:
    # It reads the embedded model's GGUF header, and names its file type, with
    # starchart's own reader: no gguf package, no numpy, no model, no database.
    modules = modules_of("models", "list", home=tmp_path)
    assert "starchart.doctor.gguf" in modules  # the header reader did run
    assert {name.split(".")[0] for name in modules} & HEAVY == set()
