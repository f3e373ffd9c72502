"""The machine: OS, Python, CPU (and the SIMD sets llama.cpp uses), RAM, disk.

Read from the operating system: ``/proc`` on Linux, ``sysctl`` on macOS (the
model cache's place from huggingface_hub). RAM honours a cgroup limit (containers), which
is what a model load actually runs into.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starchart.doctor.report import Section, fail, ok, warn
from starchart.doctor.units import GB, gb

# What llama.cpp's CPU kernels are built around; shown in this order.
SIMD = ("AVX", "AVX2", "FMA", "F16C", "AVX512F", "AVX512_VNNI", "AVX512_BF16", "AMX", "NEON")
_LINUX_FLAGS = {"avx": "AVX", "avx2": "AVX2", "fma": "FMA", "f16c": "F16C",
                "avx512f": "AVX512F", "avx512_vnni": "AVX512_VNNI",
                "avx512_bf16": "AVX512_BF16", "amx_tile": "AMX",
                "asimd": "NEON", "neon": "NEON"}
MIN_PYTHON = (3, 11)
LOW_DISK = 10 * GB  # a 7B model in fp16 is ~14 GB; a small GGUF a few hundred MB
LOW_RAM = 2 * GB


@dataclass(frozen=True)
class Memory:
    total: int | None
    available: int | None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _sysctl(name: str) -> str | None:
    try:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True,
                              timeout=2, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cpu_model() -> str:
    info = _read("/proc/cpuinfo") or ""
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    if sys.platform == "darwin":
        return _sysctl("machdep.cpu.brand_string") or platform.processor()
    return platform.processor() or platform.machine()


def simd_features(cpuinfo: str | None = None, machine: str | None = None) -> list[str]:
    """The SIMD sets this CPU has, by llama.cpp's names."""
    machine = (machine or platform.machine()).lower()
    found: set[str] = set()
    if machine in ("arm64", "aarch64"):
        found.add("NEON")  # mandatory in ARMv8-A
    text = cpuinfo if cpuinfo is not None else (_read("/proc/cpuinfo") or "")
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            found.update(_LINUX_FLAGS[f] for f in value.split() if f in _LINUX_FLAGS)
            break
    if not text and sys.platform == "darwin" and machine == "x86_64":
        leaf7 = (_sysctl("machdep.cpu.leaf7_features") or "").upper()
        features = (_sysctl("machdep.cpu.features") or "").upper()
        found.update(f for f in SIMD if f in leaf7.split() or f in features.split())
        if "AVX1.0" in features.split():
            found.add("AVX")
    return [name for name in SIMD if name in found]


def _meminfo(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def _cgroup_limit() -> tuple[int, int] | None:
    """(limit, usage) in bytes when this process runs under a cgroup v2 memory limit."""
    limit = (_read("/sys/fs/cgroup/memory.max") or "").strip()
    usage = (_read("/sys/fs/cgroup/memory.current") or "").strip()
    if limit.isdigit() and usage.isdigit():
        return int(limit), int(usage)
    return None


def memory() -> Memory:
    info = _meminfo(_read("/proc/meminfo") or "")
    total, available = info.get("MemTotal"), info.get("MemAvailable")
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = None
    cgroup = _cgroup_limit()
    if cgroup is not None:
        limit, usage = cgroup
        total = min(total, limit) if total else limit
        available = min(available, limit - usage) if available else limit - usage
    return Memory(total, available)


def model_cache_dir() -> Path:
    """Where Hugging Face downloads go: huggingface_hub's own answer (HF_HUB_CACHE,
    HF_HOME, XDG_CACHE_HOME, as it resolved them)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def disk_free(path: Path) -> int | None:
    """Free bytes on the disk that holds ``path`` (or its nearest existing parent)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


@dataclass(frozen=True)
class SystemFacts:
    os: str
    python: str
    python_executable: str
    cpu: str
    machine: str
    cores: int
    simd: list[str]
    ram_total: int | None
    ram_available: int | None
    model_cache: str
    disk_free: int | None
    home: str
    home_disk_free: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def facts(home: Path) -> SystemFacts:
    mem = memory()
    cache = model_cache_dir()
    return SystemFacts(
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        python_executable=sys.executable,
        cpu=cpu_model(),
        machine=platform.machine(),
        cores=os.cpu_count() or 1,
        simd=simd_features(),
        ram_total=mem.total,
        ram_available=mem.available,
        model_cache=str(cache),
        disk_free=disk_free(cache),
        home=str(home),
        home_disk_free=disk_free(home),
    )


def section(found: SystemFacts) -> Section:
    out = Section("system", found.as_dict())
    out.checks.append(ok("system.os", "Operating system", f"{found.os} ({found.machine})"))
    if tuple(int(p) for p in found.python.split(".")[:2]) >= MIN_PYTHON:
        out.checks.append(ok("system.python", "Python",
                             f"{found.python} ({found.python_executable})"))
    else:
        need = ".".join(map(str, MIN_PYTHON))
        out.checks.append(fail("system.python", "Python", f"{found.python} is too old",
                               f"install Python {need} or newer and recreate the venv"))
    simd = ", ".join(found.simd) or "none detected"
    cpu = f"{found.cpu}, {found.cores} cores; SIMD: {simd}"
    x86 = found.machine.lower() in ("x86_64", "amd64", "i686", "x86")
    if x86 and "AVX2" not in found.simd:
        out.checks.append(warn("system.cpu", "CPU", cpu + " (no AVX2: llama.cpp runs several"
                               " times slower)", "use a machine with AVX2 (any x86 CPU since 2013)"
                               " or a GPU for generation"))
    else:
        out.checks.append(ok("system.cpu", "CPU", cpu))
    ram = f"{gb(found.ram_available)} available of {gb(found.ram_total)}"
    if found.ram_available is not None and found.ram_available < LOW_RAM:
        out.checks.append(warn("system.ram", "RAM", ram, "close other programs or use a smaller"
                               " model: even the embedded 135M model wants ~0.3 GB"))
    else:
        out.checks.append(ok("system.ram", "RAM", ram))
    disk = f"{gb(found.disk_free)} free at the model cache {found.model_cache}"
    if found.disk_free is not None and found.disk_free < LOW_DISK:
        out.checks.append(warn("system.disk", "Disk", disk, "free some space or point HF_HOME at"
                               " a bigger disk: a 7B model in fp16 needs ~14 GB"))
    else:
        out.checks.append(ok("system.disk", "Disk", disk))
    return out
