"""Fixtures for the transformers engine: the tiny scripted Llama, built once per
session; an engine on it loads in well under a second."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_model import build

from starchart.engines.transformers import TransformersEngine


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tiny(tiny_folder: Path) -> Iterator[TransformersEngine]:
    engine = TransformersEngine(str(tiny_folder), n_ctx=1024, chat_template="starchat",
                                max_sequences=8)
    engine.load()
    yield engine
    engine.close()
