"""Reading a GGUF's metadata and tensor table: starchart's reader against gguf.GGUFReader.

    .venv/bin/python benchmarks/bench_gguf_reader.py [FILE.gguf]

Default file: the embedded SmolLM2-135M Q4_1. Prints each time and the ratio.
"""

from __future__ import annotations

import sys
import time

import gguf

from starchart.doctor import gguf as ours
from starchart.registry import resolve


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else str(resolve("smollm2-135m-instruct").path)
    start = time.perf_counter()
    found = ours.read(path)
    mine = time.perf_counter() - start
    start = time.perf_counter()
    reader = gguf.GGUFReader(path)
    theirs = time.perf_counter() - start
    assert len(reader.tensors) == len(found.tensors)
    print(f"{path}\n  starchart.doctor.gguf.read  {mine:.3f} s\n  gguf.GGUFReader"
          f"             {theirs:.3f} s\n  ratio {theirs / mine:.0f}x")


if __name__ == "__main__":
    main()
