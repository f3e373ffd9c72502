"""Fixtures of the model tests: Gemma 3 270M (Q4_K_M GGUF), a second real model.

It is a *base* model without a chat template: use it through /v1/completions
or with a named chat template.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from chunk_packages import GEMMA_PACKAGE, joined_file


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    """The joined, hash-checked ``gemma-3-270m-q4_k_m.gguf`` (a test dependency that
    `make install-test` installs; missing, the tests fail with what to run)."""
    return joined_file(GEMMA_PACKAGE)


# The loopback hub (tests/doctor) and the tiny checkpoint (tests/engine_transformers).
sys.path.insert(0, str(Path(__file__).parents[1] / "doctor"))
sys.path.insert(0, str(Path(__file__).parents[1] / "engine_transformers"))


def tiny_gguf(name: str, *, quant: int = 15, rows: int = 16) -> bytes:
    """A small well-formed GGUF (two tensors, the first ``rows`` x 8 float32): enough
    for the listing, the integrity check and the planner, not meant to generate."""
    import numpy as np
    from gguf import GGUFWriter

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.gguf"
        writer = GGUFWriter(str(path), "llama")
        writer.add_name(name)
        writer.add_file_type(quant)
        writer.add_block_count(1)
        writer.add_context_length(128)
        writer.add_embedding_length(8)
        writer.add_feed_forward_length(16)
        writer.add_head_count(2)
        writer.add_tensor("token_embd.weight", np.zeros((rows, 8), dtype=np.float32))
        writer.add_tensor("output.weight", np.ones((16, 8), dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama of the transformers tests: safetensors, config, tokenizer."""
    from tiny_model import build

    return build(tmp_path_factory.mktemp("tiny-llama"))


def starchart(*args: str, home: Path, hf: Path, stdin: str | None = None,
              **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess with its own STARCHART_HOME and HF cache."""
    full = {**os.environ, "STARCHART_HOME": str(home), "HF_HOME": str(hf),
            "HF_HUB_DISABLE_TELEMETRY": "1", **env}
    for name in ("HF_HUB_CACHE", "HF_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        if name not in env:
            full.pop(name, None)
    return subprocess.run([sys.executable, "-m", "starchart", *args], capture_output=True,
                          text=True, timeout=120, env=full, input=stdin or "", check=False)
