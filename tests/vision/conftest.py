"""CLIP fixtures: a tiny random CLIP with the real tokenizer (see ``tiny_clip.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from starchart.vision.clip import ClipModel

from tests.vision.tiny_clip import build_clip


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def clip_model(tiny_clip_dir: Path) -> Iterator[ClipModel]:
    model = ClipModel(str(tiny_clip_dir), max_batch=8, max_wait_ms=20)
    model.load()
    yield model
    model.close()
