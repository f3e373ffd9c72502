"""Read a GGUF file's metadata and tensor table without loading the weights.

The format (ggml's docs/gguf.md): magic ``GGUF``, version, tensor count,
key/value count, the key/values, then per tensor its name, shape, type and
offset into the data section, which starts at the next ``general.alignment``
boundary. All little-endian. Big string arrays (the vocabulary, the merges)
are skipped and only counted.

Why not ``gguf.GGUFReader``: it builds an object per vocabulary string; on the
embedded 98 MB SmolLM2 file it takes ~70x as long as this reader (14.2 s
against 0.2 s, ``benchmarks/bench_gguf_reader.py``), and the planner runs on
every ``doctor --model``.

It does not import the gguf package either: that imports numpy and every gguf
module (~90 ms), and ``models list`` reads a header for each model it lists.
"""

from __future__ import annotations

import itertools
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from starchart.errors import BadRequest

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_KEEP_ARRAY = 64  # arrays longer than this keep only their length

# llama.cpp's LLAMA_FTYPE numbers (``general.file_type``) and their names, as the
# gguf package's ``LlamaFileType`` names them less its ALL_/MOSTLY_ prefix. Written
# out here so that naming a file's type does not import gguf (see above);
# tests/doctor/test_gguf_reader.py holds this table to gguf's. A number it lacks
# (one a newer llama.cpp added) is looked up in the gguf package itself.
_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 1024: "GUESSED",
}


def file_type_name(value: int) -> str:
    """llama.cpp's LLAMA_FTYPE number (``general.file_type``) -> its name, e.g. 15 ->
    "Q4_K_M"; "type N" for a number neither this table nor the gguf package knows."""
    if value in _FILE_TYPES:
        return _FILE_TYPES[value]
    from gguf import LlamaFileType

    try:
        name = LlamaFileType(value).name
    except ValueError:
        return f"type {value}"
    return name.split("_", 1)[-1]  # ALL_F32, MOSTLY_Q4_K_M -> F32, Q4_K_M


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    type: int
    offset: int
    nbytes: int  # from the offsets: this tensor's share of the data section

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class GgufFile:
    path: Path
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)
    array_lengths: dict[str, int] = field(default_factory=dict)
    tensors: list[Tensor] = field(default_factory=list)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch_value(self, key: str) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}")

    @property
    def file_type(self) -> str | None:
        value = self.metadata.get("general.file_type")
        # A whole number, as llama.cpp writes it; anything else is a malformed header,
        # read as a file that states no type (a bool is an int to Python: not here).
        return file_type_name(value) if type(value) is int else None

    @property
    def n_params(self) -> int:
        return sum(t.elements for t in self.tensors)

    @property
    def weight_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


class _Reader:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.size = os.fstat(handle.fileno()).st_size

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = self.handle.read(size)
        if len(data) != size:
            raise EOFError("the file ends inside its header")
        return struct.unpack(fmt, data)[0]

    def string(self) -> str:
        length = self.take("<Q")
        if length > self.size - self.handle.tell():  # never allocate what a header claims
            raise EOFError(f"a string of {length} bytes runs past the end of the file")
        data = self.handle.read(length)
        if len(data) != length:
            raise EOFError("the file ends inside a string")
        return data.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.handle.seek(self.take("<Q"), 1)

    def value(self, kind: int) -> Any:
        if kind == _STRING:
            return self.string()
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        raise ValueError(f"unknown GGUF value type {kind}")

    def array(self) -> tuple[list[Any] | None, int]:
        kind, count = self.take("<I"), self.take("<Q")
        if count <= _KEEP_ARRAY:
            return [self.value(kind) for _ in range(count)], count
        if kind == _STRING:
            for _ in range(count):
                self.skip_string()
        elif kind in _SCALARS:
            self.handle.seek(struct.calcsize(_SCALARS[kind]) * count, 1)
        else:  # arrays of arrays: walk them
            for _ in range(count):
                self.array()
        return None, count


def read(path: str | Path) -> GgufFile:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return _read(path, _Reader(handle))
    except (EOFError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise BadRequest(f"{path} is not a readable GGUF file: {exc}", param="model") from exc
    except OSError as exc:
        raise BadRequest(f"cannot read {path}: {exc.strerror}", param="model") from exc


def _read(path: Path, r: _Reader) -> GgufFile:
    if r.handle.read(4) != b"GGUF":
        raise ValueError("no GGUF magic at the start")
    version = r.take("<I")
    count = "<I" if version == 1 else "<Q"  # version 1 used 32-bit counts
    n_tensors, n_kv = r.take(count), r.take(count)
    out = GgufFile(path=path, version=version)
    for _ in range(n_kv):
        key = r.string()
        kind = r.take("<I")
        if kind == _ARRAY:
            values, length = r.array()
            out.array_lengths[key] = length
            if values is not None:
                out.metadata[key] = values
        else:
            out.metadata[key] = r.value(kind)
    raw: list[tuple[str, tuple[int, ...], int, int]] = []
    for _ in range(n_tensors):
        name = r.string()
        dims = r.take("<I")
        shape = tuple(r.take(count) for _ in range(dims))
        raw.append((name, shape, r.take("<I"), r.take("<Q")))
    alignment = int(out.metadata.get("general.alignment", 32))
    start = -(-r.handle.tell() // alignment) * alignment
    end = path.stat().st_size - start
    ordered = sorted(raw, key=lambda t: t[3])
    following = {t[0]: nxt[3] for t, nxt in itertools.pairwise(ordered)}
    for name, shape, kind, offset in raw:
        out.tensors.append(Tensor(name, shape, kind, offset,
                                  following.get(name, end) - offset))
    return out
