"""Is a weights file whole? A zero-length, truncated or corrupt GGUF or
safetensors file is named with what is wrong, before llama.cpp or transformers
meet it (they would crash, or fail with a message that names neither)."""

from __future__ import annotations

from pathlib import Path

from starchart.doctor import gguf
from starchart.doctor.safetensors_header import expected_size
from starchart.errors import BadRequest


def _size(path: Path) -> int:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadRequest(f"cannot read {path}: {exc.strerror}", param="model") from exc
    if size == 0:
        raise BadRequest(f"{path} is empty (0 bytes): an interrupted download or copy;"
                         " fetch it again", param="model")
    return size


def check_gguf(path: Path) -> None:
    """Raise ``BadRequest`` naming ``path`` unless its header reads and its data
    section holds every tensor the header lists."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    _size(path)
    parsed = gguf.read(path)  # a bad header raises, naming the file
    if not parsed.tensors:
        return
    last = max(parsed.tensors, key=lambda t: t.offset)
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(last.type)]
    except (KeyError, ValueError):
        return  # a tensor type this gguf package does not know: llama.cpp will judge
    needed = last.elements // block * type_size
    if last.nbytes < needed:
        missing = needed - max(last.nbytes, 0)
        raise BadRequest(f"{path} is truncated: its last tensor ({last.name}) needs"
                         f" {missing} bytes more than the file has; fetch it again",
                         param="model")


def check_safetensors(path: Path) -> None:
    size = _size(path)
    needed = expected_size(path)
    if size < needed:
        raise BadRequest(f"{path} is truncated: {size} of the {needed} bytes its header"
                         " describes; fetch it again", param="model")


def check_weights(path: Path) -> None:
    """A .gguf or .safetensors file, or every such file of a checkpoint folder."""
    files = [path] if path.is_file() else sorted(
        [*path.glob("*.safetensors"), *path.glob("*.gguf")])
    for file in files:
        if file.suffix.lower() == ".gguf":
            check_gguf(file)
        elif file.suffix == ".safetensors":
            check_safetensors(file)
