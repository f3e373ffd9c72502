"""bitsandbytes: installed? does its native library load for this CUDA? does 8-bit work?

The known ways it fails (the ones the user's document fought by hand) map to
one-line fixes in ``diagnose``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass

from starchart.doctor.install_plan import InstallPlan
from starchart.doctor.nvidia import GpuProbe
from starchart.doctor.pytorch import TorchFacts
from starchart.doctor.report import Section, fail, ok, warn

PROBE_TIMEOUT = 60.0


@dataclass(frozen=True)
class Diagnosis:
    problem: str
    fix: str


# (pattern in the error text, what it means, the fix). First match wins. The
# fix "bnb" is the install plan's bitsandbytes line (a release with a library
# for torch's CUDA that needs neither scipy nor triton, so none of the
# document's hand fixes), "torch" its torch line.
_KNOWN: tuple[tuple[str, str, str], ...] = (
    (r"No module named '?scipy", "this bitsandbytes release needs scipy, which is missing",
     "bnb"),
    (r"module 'importlib' has no attribute 'util'",
     "this bitsandbytes release has a broken `import importlib` in triton/triton_utils.py",
     "bnb"),
    (r"No module named '?triton", "this bitsandbytes release needs triton, which is missing",
     "bnb"),
    (r"compiled without GPU support|CPU-only|cpu library",
     "the installed bitsandbytes has no CUDA library", "bnb"),
    (r"libbitsandbytes_cuda(\d+)|CUDA binary not found|CUDA Setup failed|"
     r"Could not find the bitsandbytes CUDA binary|CUDA SETUP: .*not found",
     "no bitsandbytes native library for this CUDA version (no need to build one from"
     " source: a release that ships it)", "bnb"),
    (r"libcudart\.so|libcublas(Lt)?\.so|libcusparse\.so",
     "the CUDA runtime libraries are not found (bitsandbytes uses torch's)", "torch"),
    (r"CUDA out of memory|OutOfMemoryError", "the GPU has no free memory for the test",
     "free GPU memory (nvidia-smi lists the processes) and run the doctor again"),
    (r"torch\.cuda\.is_available\(\) is False", "torch cannot use the GPU",
     "fix the 'PyTorch CUDA' check first"),
    (r"No module named '?torch", "bitsandbytes needs torch, which is missing", "torch"),
)


def install_line(plan: InstallPlan, package: str) -> str:
    step = plan.step(package)
    if step is not None:
        return step.shell()
    return "; ".join(plan.notes) or f"no {package} release fits this machine"


def diagnose(error: str, plan: InstallPlan) -> Diagnosis:
    for pattern, problem, fix in _KNOWN:
        if re.search(pattern, error):
            if fix in ("bnb", "torch"):
                fix = install_line(plan, "bitsandbytes" if fix == "bnb" else "torch")
            return Diagnosis(problem, fix)
    last = next((line for line in reversed(error.strip().splitlines()) if line.strip()),
                "unknown error")
    return Diagnosis(last.strip(), f"run `{shlex.quote(sys.executable)} -m bitsandbytes`"
                                   " for its own diagnostics")


@dataclass(frozen=True)
class BnbResult:
    imported: bool
    version: str | None
    native: bool  # its compiled library for this CUDA loaded
    matmul: bool
    error: str | None


def run_probe(timeout: float = PROBE_TIMEOUT) -> BnbResult:
    try:
        done = subprocess.run([sys.executable, "-m", "starchart.doctor.bnb_probe"],
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return BnbResult(False, None, False, False, f"the bitsandbytes check did not finish"
                                                    f" within {timeout:g} s")
    lines = done.stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        data = {}
    if not data:
        return BnbResult(False, None, False, False,
                         (done.stderr or done.stdout).strip()[-4000:]
                         or f"the check exited with {done.returncode}")
    return BnbResult(bool(data.get("imported")), data.get("version"), bool(data.get("native")),
                     bool(data.get("matmul")), data.get("error"))


def installed_version() -> str | None:
    if importlib.util.find_spec("bitsandbytes") is None:
        return None
    try:
        return importlib.metadata.version("bitsandbytes")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def section(gpus: GpuProbe, torch: TorchFacts, plan: InstallPlan, *,
            run: bool = True) -> Section:
    version = installed_version()
    out = Section("bitsandbytes", {"installed": version is not None, "version": version,
                                   "native_library": None, "matmul_8bit": None, "error": None,
                                   "needs_install": False})
    title = "bitsandbytes"
    if version is None:
        if gpus.gpus:
            out.facts["needs_install"] = plan.step("bitsandbytes") is not None
            out.checks.append(warn("bnb", title, "not installed: needed to load models in"
                                   " 8-bit or 4-bit on the GPU",
                                   install_line(plan, "bitsandbytes")))
        else:
            out.checks.append(ok("bnb", title, "not installed (8-bit/4-bit loading needs an"
                                 " NVIDIA GPU)"))
        return out
    if not gpus.gpus:
        out.checks.append(ok("bnb", title, f"{version} installed; functional check skipped:"
                             " no NVIDIA GPU"))
        return out
    if not torch.cuda_available:
        out.checks.append(warn("bnb", title, f"{version} installed; functional check skipped:"
                               " torch cannot use the GPU", "fix the 'PyTorch CUDA' check first"))
        return out
    if not run:
        return out
    result = run_probe()
    out.facts.update(native_library=result.native, matmul_8bit=result.matmul,
                     error=result.error)
    if result.matmul:
        out.checks.append(ok("bnb", title, f"{result.version or version}: native library"
                             " loaded, 8-bit matmul on the GPU works"))
    else:
        found = diagnose(result.error or "", plan)
        if result.imported and not result.native:
            found = diagnose("CUDA Setup failed: " + (result.error or ""), plan)
        out.facts["needs_install"] = found.fix == install_line(plan, "bitsandbytes") and \
            plan.step("bitsandbytes") is not None
        out.checks.append(fail("bnb", title, f"{version}: {found.problem}", found.fix))
    return out
