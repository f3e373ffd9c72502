"""PyTorch: which build is installed, whether it sees the GPU, and if not, why.

torch is imported only when it is installed and there is a GPU to ask it
about (the import alone takes seconds); otherwise its build is read from
``torch/version.py``. Everything judged from what it reports lives in
``section()``, which takes plain facts so that known (driver, torch) pairs can
be checked without a GPU.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starchart.doctor import compat, install_plan
from starchart.doctor.nvidia import GpuProbe
from starchart.doctor.report import Check, Section, fail, ok, warn


@dataclass(frozen=True)
class TorchFacts:
    installed: bool
    version: str | None = None
    cuda: str | None = None  # the CUDA release this build was compiled for
    cuda_available: bool = False
    device_count: int = 0
    cudnn: str | None = None
    mps_available: bool = False
    error: str | None = None  # the import failed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_VERSION_LINE = re.compile(r"""^(?P<key>__version__|cuda)\s*(?::[^=]*)?=\s*(?P<value>.*)$""",
                           re.MULTILINE)


def read_build(version_py: str) -> tuple[str | None, str | None]:
    """(version, CUDA build) from the text of torch/version.py, which torch's build writes."""
    found: dict[str, str | None] = {}
    for match in _VERSION_LINE.finditer(version_py):
        value = match["value"].strip()
        found[match["key"]] = value.strip("'\"") if value[:1] in "'\"" else None
    return found.get("__version__"), found.get("cuda")


def probe(*, import_torch: bool = True) -> TorchFacts:
    """What torch says about itself. Without ``import_torch`` (no GPU to ask
    about), only its build is read from torch/version.py, skipping the
    seconds an import takes."""
    spec = importlib.util.find_spec("torch")
    if spec is None:
        return TorchFacts(installed=False)
    if not import_torch and spec.origin:
        try:
            text = (Path(spec.origin).parent / "version.py").read_text()
        except OSError:
            text = ""
        version, cuda = read_build(text)
        if version:
            return TorchFacts(installed=True, version=version, cuda=cuda)
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken install is a finding, not a crash
        return TorchFacts(installed=True, error=f"{type(exc).__name__}: {exc}")
    available = bool(torch.cuda.is_available())
    cudnn = torch.backends.cudnn.version() if available else None
    mps = getattr(torch.backends, "mps", None)
    return TorchFacts(
        installed=True,
        version=str(torch.__version__),
        cuda=torch.version.cuda,
        cuda_available=available,
        device_count=torch.cuda.device_count() if available else 0,
        cudnn=str(cudnn) if cudnn else None,
        mps_available=bool(mps and mps.is_available()),
    )


def default_plan(gpus: GpuProbe) -> install_plan.InstallPlan:
    """The install plan for these GPUs on this Python (nvcc is not asked: torch's
    advice does not depend on it)."""
    return install_plan.build(install_plan.Machine(
        gpus=gpus, python=platform.python_version(), machine=platform.machine(),
        system=platform.system(), nvcc=None))


def torch_fix(plan: install_plan.InstallPlan) -> str:
    step = plan.step("torch")
    assert step is not None  # every plan installs torch
    return step.shell()


def _why_no_cuda(found: TorchFacts, gpus: GpuProbe, plan: install_plan.InstallPlan) -> Check:
    """cuda.is_available() is False on a machine with an NVIDIA GPU: say why in words."""
    title = "PyTorch CUDA"
    choice = plan.torch
    install = torch_fix(plan)
    if found.cuda is None:
        return fail("torch.cuda", title, f"torch {found.version} is a CPU-only build, but this"
                    " machine has an NVIDIA GPU", install if choice else
                    "upgrade the NVIDIA driver (>= R525 runs every CUDA 12 build)")
    driver_cuda = gpus.cuda_version or "unknown"
    runs = (compat.cuda_build_runs(found.cuda, gpus.cuda_version, gpus.driver_version)
            if gpus.cuda_version else None)
    if runs is not None and runs.verdict == "fail":
        need = compat.min_driver_for_cuda(found.cuda)
        upgrade = f"upgrade the driver to ≥ {compat.driver_branch(need)}" if need else \
            "upgrade the driver"
        other = (f"install torch built for {compat.cuda_tag(choice.cuda)}: {install}"
                 if choice and choice.cuda else f"install the CPU build: {install}")
        return fail("torch.cuda", title,
                    f"this torch is built for CUDA {found.cuda}, your driver"
                    f" {gpus.driver_version} supports up to {driver_cuda}",
                    f"{upgrade} or {other}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return fail("torch.cuda", title, f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU",
                    "unset CUDA_VISIBLE_DEVICES (or set it to the GPU indices to use, e.g. 0)")
    return fail("torch.cuda", title,
                f"torch {found.version} (CUDA {found.cuda}) should run on driver"
                f" {gpus.driver_version} (CUDA ≤ {driver_cuda}) but sees no GPU",
                "check that this user may open /dev/nvidia* (group 'video' or 'render'), that"
                " no other CUDA runtime in LD_LIBRARY_PATH shadows torch's, and run"
                " `python -c 'import torch; torch.cuda.init()'` for the driver's own error")


def needs_install(found: TorchFacts, gpus: GpuProbe, plan: install_plan.InstallPlan) -> bool:
    """Whether ``doctor --fix`` should install the plan's torch: missing, broken, below
    starchart's floor, or (with a GPU) a build that cannot use it. A working build
    is never replaced, newer or not."""
    if not found.installed or found.error or not found.version:
        return True
    have = compat.version(found.version)
    if have is None or have < (compat.version(compat.TORCH_FLOOR) or ()):
        return True
    if plan.torch is None or found.cuda_available:
        return False
    if found.cuda is None:
        return True
    runs = compat.cuda_build_runs(found.cuda, gpus.cuda_version or "0.0", gpus.driver_version)
    return runs.verdict == "fail"


def section(found: TorchFacts, gpus: GpuProbe,
            plan: install_plan.InstallPlan | None = None) -> Section:
    plan = plan or default_plan(gpus)
    choice = plan.torch
    install = torch_fix(plan)
    out = Section("torch", found.as_dict())
    out.facts["recommended_install"] = install
    out.facts["needs_install"] = needs_install(found, gpus, plan)
    has_gpu = bool(gpus.gpus)
    if not found.installed:
        out.checks.append(warn("torch.installed", "PyTorch", "not installed (needed for"
                               " transformers checkpoints and CLIP; GGUF chat works without)",
                               install))
    elif found.error:
        out.checks.append(fail("torch.installed", "PyTorch", f"installed but fails to import:"
                               f" {found.error}", f"reinstall it: {install}"))
    else:
        build = f"CUDA {found.cuda}" if found.cuda else "CPU-only"
        out.checks.append(ok("torch.installed", "PyTorch", f"{found.version} ({build} build)"))
        if has_gpu and not found.cuda_available:
            out.checks.append(_why_no_cuda(found, gpus, plan))
        elif has_gpu:
            detail = (f"cuda.is_available() = True, {found.device_count} device(s),"
                      f" cuDNN {found.cudnn or 'not found'}")
            runs = (compat.cuda_build_runs(found.cuda, gpus.cuda_version, gpus.driver_version)
                    if found.cuda and gpus.cuda_version else None)
            if runs is not None and found.cuda and runs.verdict == "warn":
                need = compat.min_driver_for_cuda(found.cuda) or "a newer driver"
                out.checks.append(warn("torch.cuda", "PyTorch CUDA", f"{detail}; {runs.reason}",
                                       f"upgrade the driver to ≥ {compat.driver_branch(need)}"
                                       f" ({need}) for full support"))
            else:
                out.checks.append(ok("torch.cuda", "PyTorch CUDA", detail))
        elif found.cuda:
            out.checks.append(warn("torch.cuda", "PyTorch CUDA", f"a CUDA {found.cuda} build on"
                                   " a machine without an NVIDIA GPU (gigabytes of unused CUDA"
                                   " libraries)",
                                   f"{shlex.quote(sys.executable)} -m pip uninstall -y torch"
                                   f" && {install}"))
        if found.mps_available:
            out.checks.append(ok("torch.mps", "Apple MPS", "available: torch can use the"
                                 " Apple GPU (device 'mps')"))
    if choice is not None:
        detail = (f"{install} (the newest torch whose CUDA {choice.cuda} build runs on driver"
                  f" {gpus.driver_version})")
        if gpus.cuda_version and (strict := compat.strict_torch(gpus.cuda_version)) and \
                strict.torch != choice.torch:
            detail += (f"; exact match without compatibility mode: torch {strict.torch}"
                       f" built for {compat.cuda_tag(strict.cuda or '')}")
        out.checks.append(ok("torch.recommended", "Recommended PyTorch", detail))
    elif has_gpu:
        out.checks.append(fail("torch.recommended", "Recommended PyTorch", "no PyTorch release"
                               f" >= {compat.TORCH_FLOOR} in our table has a CUDA build for"
                               f" driver {gpus.driver_version}",
                               "upgrade the NVIDIA driver (≥ R525 runs every CUDA 12 build)"))
    else:
        out.checks.append(ok("torch.recommended", "Recommended PyTorch", f"{install} (no NVIDIA"
                             " GPU: the CPU build, far smaller than the CUDA one)"))
    return out
