"""Fixtures for the transformers engine: the tiny scripted Llama (built once per
session, loads in well under a second) and helpers to drain streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tiny_model import build

from starchart.engines.base import Finish, StreamEvent, TextDelta
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


async def drain(events: AsyncIterator[StreamEvent]) -> tuple[list[str], Finish]:
    """All text deltas (one list item each) and the closing Finish."""
    deltas: list[str] = []
    finish = None
    async for event in events:
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        else:
            finish = event
    assert finish is not None
    return deltas, finish


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)
