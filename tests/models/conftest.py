"""Fixtures of the model tests: Gemma 3 270M (Q4_K_M GGUF), a second real model.

It is a *base* model without a chat template: use it through /v1/completions
or with a named chat template.
"""

from __future__ import annotations

import sys
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


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama of the transformers tests: safetensors, config, tokenizer."""
    from tiny_model import build

    return build(tmp_path_factory.mktemp("tiny-llama"))
