"""The second real model of the tests: Gemma 3 270M, joined from its PyPI chunk
packages, is the file its package promises and runs on llama.cpp."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

import pytest
from chunk_packages import (
    GEMMA_PACKAGE,
    ChunkPackageError,
    chunk_files,
    joined_file,
    package_dir,
)

from starchart.engines.base import SamplingParams, TextDelta
from starchart.engines.llamacpp import LlamaCppEngine


def test_the_joined_file_has_the_packages_sha256(gemma_gguf: Path) -> None:
    # Checked against the package's SHA256SUMS, a second statement of the hash.
    sums = (package_dir(GEMMA_PACKAGE) / "data" / "SHA256SUMS").read_text().split()
    expected = dict(zip(sums[1::2], sums[0::2], strict=True))[gemma_gguf.name]
    digest = hashlib.sha256()
    with gemma_gguf.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    assert digest.hexdigest() == expected
    assert gemma_gguf.stat().st_size == sum(p.stat().st_size
                                            for p in chunk_files(GEMMA_PACKAGE, gemma_gguf.name))


def test_a_cached_file_that_was_damaged_is_joined_again(gemma_gguf: Path, tmp_path: Path) -> None:
    first = tmp_path / gemma_gguf.parent.name / gemma_gguf.name
    first.parent.mkdir()
    shutil.copyfile(gemma_gguf, first)
    with first.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\xff" * 16)
    again = joined_file(GEMMA_PACKAGE, cache=tmp_path)
    assert again == first
    assert again.read_bytes()[1000:1016] == gemma_gguf.read_bytes()[1000:1016]
    assert not list(tmp_path.rglob("*.joining"))


def test_a_missing_package_says_what_to_install() -> None:
    with pytest.raises(ChunkPackageError, match="make install-test"):
        joined_file("no_such_chunked_model_package")


def test_gemma_loads_in_llama_cpp_and_continues_a_sentence(gemma_gguf: Path) -> None:
    engine = LlamaCppEngine("gemma-3-270m", gemma_gguf, n_ctx=256, parallel=1)
    engine.load()
    try:
        assert engine.info.extra["architecture"] == "gemma3"
        assert engine.info.quantization == "Q4_K_M"
        greedy = SamplingParams(temperature=0, max_tokens=12, repetition_penalty=1.0)

        async def complete() -> str:
            events = engine.stream_completion("The capital of Germany is", greedy)
            return "".join([e.text async for e in events if isinstance(e, TextDelta)])

        text = asyncio.run(complete())
    finally:
        engine.close()
    # The base model's greedy continuation (measured with llama-cpp-python 0.3.x).
    assert text.startswith(" the capital of the German"), text
