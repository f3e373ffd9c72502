"""Fixtures of the model tests: Gemma 3 270M (Q4_K_M GGUF), a second real model.

It is a *base* model without a chat template: use it through /v1/completions
or with a named chat template.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chunk_packages import GEMMA_PACKAGE, joined_file


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    """The joined, hash-checked ``gemma-3-270m-q4_k_m.gguf`` (a test dependency that
    `make install-test` installs; missing, the tests fail with what to run)."""
    return joined_file(GEMMA_PACKAGE)
