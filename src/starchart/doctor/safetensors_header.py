"""Read safetensors headers: every tensor's name, dtype and shape, no weights.

A safetensors file starts with an 8-byte little-endian length N and N bytes
of JSON: ``{"name": {"dtype": "F16", "shape": [..], "data_offsets": [a, b]},
"__metadata__": {...}}``. A sharded checkpoint lists its files in
``model.safetensors.index.json``'s ``weight_map``.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starchart.errors import BadRequest

DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2,
               "BF16": 2, "I16": 2, "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1,
               "BOOL": 1}
MAX_HEADER = 100 * 1024 * 1024  # the format's own limit


@dataclass(frozen=True)
class TensorHeader:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.elements * DTYPE_BYTES.get(self.dtype, 2)


def _raw_header(path: Path) -> tuple[int, dict[str, Any]]:
    """(header length, the header's JSON)."""
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > MAX_HEADER:
                raise ValueError(f"header of {length} bytes is over the format's limit")
            header = json.loads(handle.read(length))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
    except (struct.error, ValueError) as exc:
        raise BadRequest(f"{path} is not a readable safetensors file: {exc}",
                         param="model") from exc
    except OSError as exc:
        raise BadRequest(f"cannot read {path}: {exc.strerror}", param="model") from exc
    return length, header


def read_header(path: Path) -> list[TensorHeader]:
    _, header = _raw_header(path)
    return [TensorHeader(name, str(info["dtype"]), tuple(int(d) for d in info["shape"]))
            for name, info in header.items() if name != "__metadata__"]


def expected_size(path: Path) -> int:
    """The file's size as its header promises it: 8 + header + the last tensor's end."""
    length, header = _raw_header(path)
    try:
        end = max((int(info["data_offsets"][1]) for name, info in header.items()
                   if name != "__metadata__"), default=0)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise BadRequest(f"{path} is not a readable safetensors file: a tensor without"
                         f" data_offsets ({exc})", param="model") from exc
    return 8 + length + end


def checkpoint_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder (via the shard index when there is one)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        return [folder / name for name in sorted(set(weight_map.values()))]
    return sorted(folder.glob("*.safetensors"))


def read_checkpoint(folder: Path) -> list[TensorHeader]:
    tensors: list[TensorHeader] = []
    for file in checkpoint_files(folder):
        tensors.extend(read_header(file))
    return tensors
