"""llama.cpp (llama-cpp-python): its version and what it was built with.

Read from llama.cpp's own system-info string, e.g.
``CUDA : ARCHS = 860 | USE_GRAPHS = 1 | CPU : SSE3 = 1 | AVX2 = 1 | ...`` (a
``NAME :`` prefix starts a backend) or, in older builds, flat flags such as
``AVX2 = 1 | CUBLAS = 1 | METAL = 0``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from typing import Any

from starchart.doctor.install_plan import CUDA_ARGS, InstallPlan
from starchart.doctor.nvidia import GpuProbe
from starchart.doctor.report import Section, fail, ok, warn
from starchart.doctor.system import SystemFacts

# Old flat flags that name a GPU backend.
_FLAT_BACKENDS = {"CUBLAS": "CUDA", "CUDA": "CUDA", "METAL": "Metal", "VULKAN": "Vulkan",
                  "HIPBLAS": "ROCm", "SYCL": "SYCL"}
_SIMD_KEYS = {"AVX": "AVX", "AVX2": "AVX2", "FMA": "FMA", "F16C": "F16C", "AVX512": "AVX512F",
              "AVX512_VNNI": "AVX512_VNNI", "AVX512_BF16": "AVX512_BF16", "AMX_INT8": "AMX",
              "NEON": "NEON"}


@dataclass
class BuildInfo:
    backends: list[str] = field(default_factory=list)  # e.g. ["CUDA", "CPU"]
    simd: list[str] = field(default_factory=list)  # in system.SIMD's names
    flags: dict[str, str] = field(default_factory=dict)

    @property
    def gpu_backends(self) -> list[str]:
        return [b for b in self.backends if b != "CPU"]


def parse_system_info(text: str) -> BuildInfo:
    info = BuildInfo()
    for part in text.split("|"):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            backend, _, part = part.partition(":")
            name = backend.strip()
            name = {"METAL": "Metal"}.get(name.upper(), name)
            if name and name not in info.backends:
                info.backends.append(name)
            part = part.strip()
        key, sep, value = part.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        info.flags[key] = value
        if value == "1" and key.upper() in _FLAT_BACKENDS:
            backend = _FLAT_BACKENDS[key.upper()]
            if backend not in info.backends:
                info.backends.append(backend)
        if value == "1" and key.upper() in _SIMD_KEYS:
            info.simd.append(_SIMD_KEYS[key.upper()])
    if "CPU" not in info.backends:
        info.backends.append("CPU")
    return info


@dataclass(frozen=True)
class LlamaFacts:
    installed: bool
    version: str | None = None
    system_info: str | None = None
    gpu_offload: bool | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe() -> LlamaFacts:
    if importlib.util.find_spec("llama_cpp") is None:
        return LlamaFacts(installed=False)
    try:
        import llama_cpp
    except Exception as exc:  # noqa: BLE001 - a broken native library is a finding
        return LlamaFacts(installed=True, error=f"{type(exc).__name__}: {exc}")
    raw = llama_cpp.llama_print_system_info()
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return LlamaFacts(installed=True, version=llama_cpp.__version__, system_info=text.strip(),
                      gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()))


def install_lines(plan: InstallPlan) -> str:
    """The plan's llama-cpp-python commands (build once, install) as one fix line."""
    return " && ".join(step.shell() for step in plan.steps
                       if step.package == "llama-cpp-python")


def gpu_advice(plan: InstallPlan) -> str:
    """How to get GPU offload: the plan's CUDA build, or why there is none (nvcc)."""
    steps = [s for s in plan.steps if s.package == "llama-cpp-python"]
    if any(dict(s.env).get("CMAKE_ARGS") == CUDA_ARGS for s in steps):
        return install_lines(plan)
    offload = [n for n in plan.notes if n.startswith("llama.cpp GPU offload")]
    return offload[0] if offload else (f"a CUDA build needs the CUDA toolkit (nvcc) on PATH,"
                                       f" built with CMAKE_ARGS=\"{CUDA_ARGS}\"")


def needs_install(found: LlamaFacts, plan: InstallPlan) -> bool:
    """Missing, broken, or without CUDA where the plan builds it with CUDA."""
    if not found.installed or found.error:
        return True
    steps = [s for s in plan.steps if s.package == "llama-cpp-python"]
    wants_cuda = any(dict(s.env).get("CMAKE_ARGS") == CUDA_ARGS for s in steps)
    return wants_cuda and "CUDA" not in parse_system_info(found.system_info or "").backends


def section(found: LlamaFacts, system: SystemFacts, gpus: GpuProbe,
            plan: InstallPlan) -> Section:
    out = Section("llamacpp", found.as_dict())
    out.facts["needs_install"] = needs_install(found, plan)
    title = "llama.cpp"
    if not found.installed:
        out.checks.append(fail("llamacpp", title, "llama-cpp-python is not installed: it runs"
                               " every GGUF model, the default included", install_lines(plan)))
        return out
    if found.error:
        out.checks.append(fail("llamacpp", title, f"installed but does not load: {found.error}",
                               install_lines(plan)))
        return out
    build = parse_system_info(found.system_info or "")
    out.facts.update(backends=build.backends, simd=build.simd)
    detail = (f"{found.version}, backends: {', '.join(build.backends)};"
              f" CPU SIMD: {', '.join(build.simd) or 'none'}")
    unused = [s for s in system.simd if s not in build.simd and s in ("AVX2", "AVX512F", "NEON")]
    if unused:
        detail += f" (this CPU also has {', '.join(unused)})"
    if gpus.gpus and "CUDA" not in build.backends:
        out.checks.append(warn("llamacpp", title, detail + "; built without CUDA, so GGUF"
                               " models will not use the NVIDIA GPU", gpu_advice(plan)))
    elif system.machine.lower() == "arm64" and system.os.startswith("Darwin") \
            and "Metal" not in build.backends:
        out.checks.append(warn("llamacpp", title, detail + "; built without Metal",
                               install_lines(plan)))
    elif "AVX2" in system.simd and "AVX2" not in build.simd:
        out.checks.append(warn("llamacpp", title, detail + "; built without AVX2 although the"
                               " CPU has it (several times slower)", install_lines(plan)))
    else:
        out.checks.append(ok("llamacpp", title, detail))
    return out
