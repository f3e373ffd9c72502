"""How close is the memory planner to what llama.cpp really allocates? How fast is the doctor?

For the embedded GGUF at several context lengths, load the model in a fresh
process with llama.cpp's log on, read the buffer sizes it reports (model,
KV cache, compute, output) and the process's resident memory, and print them
next to ``starchart plan``'s estimate as ratios (estimate / measured; above 1
means the planner errs on the safe side). Then time ``starchart doctor`` and
``starchart plan`` end to end.

    python benchmarks/bench_planner.py [--n-ctx 512 2048 8192]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

from starchart.doctor import planner
from starchart.doctor.nvidia import GpuProbe
from starchart.registry import EMBEDDED_NAME, embedded_gguf

MIB = 1024 * 1024
LOAD = r"""
import sys, llama_cpp
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
before = rss()
llm = llama_cpp.Llama(sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=1, verbose=True)
print("RSS", rss() - before, flush=True)
"""
BUFFER = re.compile(r"(model|KV|compute|output) buffer size =\s*([\d.]+) MiB")


def measure(n_ctx: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", LOAD, str(embedded_gguf()), str(n_ctx)],
                          capture_output=True, text=True, timeout=300, check=True)
    found: dict[str, float] = {}
    for kind, mib in BUFFER.findall(done.stderr):
        found[kind] = found.get(kind, 0.0) + float(mib) * MIB
    found["rss"] = float(re.search(r"RSS (\d+)", done.stdout).group(1))  # type: ignore[union-attr]
    return found


def timed(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "starchart", *args], capture_output=True, timeout=300,
                   check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-ctx", type=int, nargs="+", default=[512, 2048, 8192])
    args = parser.parse_args()
    shape = planner.load_shape(EMBEDDED_NAME)
    print(f"model: {EMBEDDED_NAME} ({shape.n_params / 1e6:.1f}M parameters,"
          f" {shape.gguf_quant})\n")
    print("| n_ctx | weights est/llama.cpp | KV est/llama.cpp | total est/llama.cpp buffers"
          " | total est/process RSS |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n_ctx in args.n_ctx:
        plan = planner.plan(shape, n_ctx=n_ctx, batch=1, gpus=GpuProbe(), ram_available=None)
        row = plan.options[-1]
        got = measure(n_ctx)
        buffers = got["model"] + got["KV"] + got["compute"] + got.get("output", 0.0)
        print(f"| {n_ctx} | {row.weights / got['model']:.2f} | {row.kv_cache / got['KV']:.2f}"
              f" | {row.total / buffers:.2f} ({row.total / MIB:.0f} / {buffers / MIB:.0f} MiB)"
              f" | {row.total / got['rss']:.2f} ({got['rss'] / MIB:.0f} MiB) |")
    print()
    doctor = min(timed("doctor") for _ in range(3))
    plan_s = min(timed("plan", EMBEDDED_NAME) for _ in range(3))
    baseline = min(timed("--version") for _ in range(3))
    print(f"starchart doctor: {doctor:.2f} s, starchart plan: {plan_s:.2f} s"
          f" (best of 3; `starchart --version` {baseline:.2f} s: doctor ="
          f" {doctor / baseline:.1f}x, plan = {plan_s / baseline:.1f}x a bare start)")


if __name__ == "__main__":
    main()
