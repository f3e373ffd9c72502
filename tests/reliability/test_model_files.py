"""Broken model files: truncated, empty, bit-flipped, absurd header counts and string
lengths. Each load ends in a clear error in its own process (a crash of llama.cpp
would take the server with it), and the header readers refuse them too."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from starchart.doctor import gguf, safetensors_header
from starchart.errors import StarchartError
from starchart.registry import embedded_gguf

LOAD = """
import sys
from pathlib import Path
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.errors import StarchartError
try:
    LlamaCppEngine("broken", Path(sys.argv[1]), n_ctx=256, parallel=1).load()
except StarchartError as exc:
    print("REFUSED:", exc.message)
    sys.exit(0)
print("LOADED")
"""


def _header(tensors: int, kvs: int, key_length: int | None = None) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", 3, tensors, kvs)
    if key_length is not None:
        head += struct.pack("<Q", key_length) + b"general.name"
    return head


def _broken_ggufs(folder: Path) -> dict[str, Path]:
    good = embedded_gguf().read_bytes()
    flipped = bytearray(good)
    for offset in range(24, 4096, 97):  # inside the metadata: lengths and types
        flipped[offset] ^= 0xFF
    files = {
        "zero-length": b"",
        "truncated (header only)": good[:4096],
        "truncated (half the tensors)": good[:len(good) // 2],
        "bit-flipped metadata": bytes(flipped),
        "2^62 tensors": _header(2**62, 0),
        "2^62 metadata entries": _header(0, 2**62),
        "2^60-byte key string": _header(1, 1, key_length=2**60),
    }
    paths = {}
    for name, data in files.items():
        path = folder / (name.replace(" ", "_").replace("^", "").replace("(", "")
                         .replace(")", "") + ".gguf")
        path.write_bytes(data)
        paths[name] = path
    return paths


def test_broken_gguf_files_give_a_clear_error_never_a_crash(
        tmp_path: Path, report: Callable[[str, str], None]) -> None:
    results = []
    for name, path in _broken_ggufs(tmp_path).items():
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-c", LOAD, str(path)], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, (name, done.returncode, done.stderr[-2000:])
        assert "REFUSED:" in done.stdout, (name, done.stdout, done.stderr[-2000:])
        if "tensors)" not in name:  # a header reader reads no tensor data
            with pytest.raises(StarchartError):
                gguf.read(path)  # the doctor's reader: it used to allocate a 2^60-byte string
        results.append(f"{name} {time.monotonic() - started:.1f} s")
    report("broken GGUF files", "every load refused with a clear error, no crash: "
           + ", ".join(results))


def test_broken_safetensors_headers_give_a_clear_error(tmp_path: Path) -> None:
    cases = {
        "zero-length": b"",
        "truncated length": b"\x10\x00",
        "absurd header length": struct.pack("<Q", 2**62) + b"{}",
        "header not JSON": struct.pack("<Q", 8) + b"not json",
        "header cut short": struct.pack("<Q", 1000) + b'{"a": {',
    }
    for name, data in cases.items():
        path = tmp_path / (name.replace(" ", "_") + ".safetensors")
        path.write_bytes(data)
        with pytest.raises(StarchartError) as refused:
            safetensors_header.read_header(path)
        assert "safetensors" in refused.value.message, name
