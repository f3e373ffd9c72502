"""What to pip install on this machine: torch, bitsandbytes and llama-cpp-python, pinned.

The one source of truth for both installers: ``make run``/``make test`` run the
lines this prints (``make install-plan`` only prints them) and ``starchart
doctor --fix`` runs the steps the doctor finds missing. It reads the GPUs and
the driver (NVML, else ``nvidia-smi``), the platform, the Python, and whether
the CUDA toolkit (``nvcc``) is there, and picks:

* torch: the newest release with wheels for this Python whose CUDA build runs
  on this driver (minor-version compatibility counts) and has kernels for these
  GPUs; ``torch==2.13.0`` (the CPU build, which the Makefile always used) without
  an NVIDIA GPU;
* bitsandbytes: the newest release with a native library for that torch's CUDA
  (GPU boxes only: it does nothing on a CPU);
* llama-cpp-python: a CUDA build when ``nvcc`` is there and its toolkit runs on
  this driver, else the portable CPU build the Makefile always made; both built
  once into a wheelhouse keyed by the build flags, then installed from it
  (pip's own cache keys wheels by URL and would hand back another build).

Standard library only (with ``compat`` and ``nvidia``): the Makefile runs it
with the fresh venv's interpreter before anything is installed::

    PYTHONPATH=src .venv/bin/python -m starchart.doctor.install_plan
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from starchart.doctor import compat, nvidia

# Without an NVIDIA GPU: the CPU build (the Makefile's pin, kept exactly; a
# plain `torch` requirement on Linux pulls a multi-GB CUDA build).
CPU_TORCH = "torch==2.13.0"
LLAMA_CPP = "llama-cpp-python==0.3.36"
# llama.cpp's default -march=native build turns on AMX on CPUs that have it,
# and those kernels segfault on any multi-token prompt (llama.cpp issue
# 20824): on x86_64 we build a portable AVX2 wheel instead.
PORTABLE_X86_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON"
                     " -DGGML_F16C=ON -DGGML_BMI2=ON")
CUDA_ARGS = "-DGGML_CUDA=on"
_NVCC_RELEASE = re.compile(r"release (\d+\.\d+)")


@dataclass(frozen=True)
class Machine:
    """What the plan depends on; tests build one from recorded nvidia-smi outputs."""

    gpus: nvidia.GpuProbe
    python: str  # "3.11.7"
    machine: str  # platform.machine()
    system: str  # platform.system()
    nvcc: str | None  # the CUDA toolkit's release, e.g. "12.4"; None without nvcc

    @property
    def windows(self) -> bool:
        return self.system == "Windows"


def nvcc_release(executable: str | None = None) -> str | None:
    """The CUDA toolkit release ``nvcc --version`` reports, None when there is no nvcc."""
    # On PATH only: that is where the build (CMake) looks first, and a toolkit the
    # user has not put on PATH is one they may not mean to use.
    path = executable or shutil.which("nvcc")
    if path is None:
        return None
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = _NVCC_RELEASE.search(done.stdout)
    return found[1] if found else None


def this_machine(*, use_nvml: bool = True) -> Machine:
    return Machine(gpus=nvidia.probe(use_nvml=use_nvml), python=platform.python_version(),
                   machine=platform.machine(), system=platform.system(), nvcc=nvcc_release())


@dataclass(frozen=True)
class Step:
    """One command: ``python -m pip ...`` with the target interpreter, maybe an env prefix."""

    package: str  # "torch" | "bitsandbytes" | "llama-cpp-python"
    pin: str  # the exact requirement, e.g. "torch==2.7.1+cu118"
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    why: str = ""

    def shell(self) -> str:
        prefix = "".join(f"{key}={shlex.quote(value)} " for key, value in self.env)
        return prefix + shlex.join(self.argv)


@dataclass
class InstallPlan:
    machine: Machine
    torch: compat.TorchChoice | None  # None: the CPU build (CPU_TORCH)
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # printed as "# ..." lines

    def step(self, package: str) -> Step | None:
        return next((s for s in self.steps if s.package == package), None)

    def lines(self) -> list[str]:
        out = [f"# {note}" for note in self.notes]
        for step in self.steps:
            if step.why:
                out.append(f"# {step.why}")
            out.append(step.shell())
        return out


def wheelhouse(cmake_args: str, root: Path | None = None) -> Path:
    """Where a llama-cpp-python build with these flags is kept. The key is the one the
    Makefile always used (sha256 of `echo '<pin> <args>'`), so cached wheels are reused."""
    root = root or Path.home() / ".cache" / "starchart" / "wheels"
    key = hashlib.sha256(f"{LLAMA_CPP} {cmake_args}\n".encode()).hexdigest()[:12]
    return root / key


def _pip(python: str, *args: str) -> tuple[str, ...]:
    return (python, "-m", "pip", *args)


def _torch_steps(found: Machine, python: str, plan: InstallPlan) -> None:
    gpus = found.gpus
    if gpus.error:
        plan.notes.append(f"nvidia-smi fails ({gpus.error}): the CPU build of torch for now;"
                          " fix the driver (`nvidia-smi` must work), then run this again")
    choice = None
    if gpus.gpus and gpus.cuda_version:
        choice = compat.recommend_torch(
            gpus.cuda_version, gpus.driver_version, python=found.python,
            capabilities=[g.compute_capability for g in gpus.gpus])
        if choice is None:
            plan.notes.append(
                f"no torch release >= {compat.TORCH_FLOOR} with wheels for Python"
                f" {found.python} runs on driver {gpus.driver_version} (CUDA"
                f" {gpus.cuda_version}): the CPU build for now; upgrade the driver"
                " (>= R525 runs every CUDA 12 build)")
    plan.torch = choice
    if choice is None:
        why = ("torch: the CPU build (no NVIDIA GPU)" if not gpus.gpus and not gpus.error
               else "torch: the CPU build")
        plan.steps.append(Step("torch", CPU_TORCH, _pip(python, "install", CPU_TORCH), why=why))
        return
    how = ("runs through CUDA minor-version compatibility" if choice.verdict == "warn"
           else "fully supported")
    plan.steps.append(Step(
        "torch", choice.requirement,
        _pip(python, "install", choice.requirement, "--index-url", choice.index_url),
        why=f"torch {choice.torch}: the newest release with Python {found.python} wheels whose"
            f" CUDA {choice.cuda} build runs on driver {gpus.driver_version} (CUDA"
            f" {gpus.cuda_version}; {how})"))


def _bnb_step(found: Machine, python: str, plan: InstallPlan) -> None:
    choice = plan.torch
    if choice is None:
        return  # 8/4-bit loading needs CUDA: nothing to install without it
    row = compat.recommend_bnb(choice.cuda, choice.torch)
    if row is None:
        plan.notes.append(f"bitsandbytes: no release in our table ships a library for CUDA"
                          f" {choice.cuda}; --quantize will not work here")
        return
    pin = f"bitsandbytes=={row.bnb}"
    plan.steps.append(Step("bitsandbytes", pin, _pip(python, "install", pin),
                           why=f"bitsandbytes {row.bnb}: ships native libraries for CUDA"
                               f" {row.cuda_min}-{row.cuda_max} (torch's build: {choice.cuda})"))


def _llama_steps(found: Machine, python: str, plan: InstallPlan,
                 wheels_root: Path | None) -> None:
    gpus = found.gpus
    cuda_ok = None
    if gpus.gpus and gpus.cuda_version and found.nvcc:
        cuda_ok = compat.cuda_build_runs(found.nvcc, gpus.cuda_version, gpus.driver_version)
    if cuda_ok is not None and cuda_ok.verdict != "fail":
        args, what = CUDA_ARGS, (f"llama.cpp with CUDA, built by nvcc {found.nvcc} (runs on"
                                 f" driver {gpus.driver_version})")
    else:
        args = PORTABLE_X86_ARGS if found.machine.lower() in ("x86_64", "amd64") else ""
        what = "llama.cpp: the portable CPU build"
        if gpus.gpus:
            need = gpus.cuda_version or "the driver's"
            if found.nvcc is None:
                why_not = "no CUDA toolkit (nvcc) here"
            else:
                why_not = f"nvcc {found.nvcc} is newer than the driver's CUDA {need}"
            plan.notes.append(
                f"llama.cpp GPU offload: {why_not}. Install the CUDA toolkit <= {need}"
                " (developer.nvidia.com/cuda-toolkit-archive; without its driver) so"
                " `nvcc` is on PATH, then run the install again: it builds llama.cpp with"
                f" CMAKE_ARGS=\"{CUDA_ARGS}\"")
    house = wheelhouse(args, wheels_root)
    env = (("CMAKE_ARGS", args),)
    if not any(house.glob("llama_cpp_python-*.whl")):
        plan.steps.append(Step(
            "llama-cpp-python", LLAMA_CPP,
            _pip(python, "wheel", "--no-deps", "--no-cache-dir", "-w", str(house), LLAMA_CPP),
            env=env, why=f"{what}: compiled once per machine into {house} (about 6 minutes"
                         " on 2 cores)"))
    plan.steps.append(Step(
        "llama-cpp-python", LLAMA_CPP,
        # --force-reinstall: the same release may be installed as another build.
        _pip(python, "install", "--no-deps", "--no-index", "--force-reinstall",
             "--find-links", str(house), LLAMA_CPP),
        why=f"{what}, from the wheelhouse"))


def build(found: Machine, *, python: str | None = None,
          wheels_root: Path | None = None) -> InstallPlan:
    """The pinned commands for ``found``, run with the interpreter ``python``."""
    python = python or sys.executable
    plan = InstallPlan(found, None)
    _torch_steps(found, python, plan)
    _bnb_step(found, python, plan)
    _llama_steps(found, python, plan, wheels_root)
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m starchart.doctor.install_plan",
        description="Print the pinned install commands for this machine, one per line"
        " (explanations as # comments), without running them.")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter the commands install into (default: this one)")
    args = parser.parse_args(argv)
    print("\n".join(build(this_machine(), python=args.python).lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
