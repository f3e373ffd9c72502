"""NVIDIA GPUs: through NVML (``nvidia-ml-py``), else by running ``nvidia-smi``.

NVML is the library nvidia-smi itself reads; asking it directly is quicker and
gives exact numbers. It is missing when the Python binding is not installed or
when there is no driver (then there is no GPU to find either), so the same
facts are also parsed from ``nvidia-smi``'s two outputs: the CSV query (memory,
compute capability) and the plain table (the header's "CUDA Version", the
highest CUDA release the driver supports).

No GPU is a normal state: ``probe()`` then returns an empty ``GpuProbe``.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

from starchart.doctor import compat
from starchart.doctor.report import Section, fail, ok
from starchart.doctor.units import gb

MIB = 1024 * 1024
SMI_TIMEOUT = 5.0
QUERY_FIELDS = ("index", "name", "pci.bus_id", "memory.total", "memory.used", "memory.free",
                "driver_version", "compute_cap")


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total: int  # bytes
    memory_free: int  # bytes
    compute_capability: str | None = None
    bus_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GpuProbe:
    """What was found, how (``source``), and why a method gave nothing (``notes``)."""

    gpus: list[Gpu] = field(default_factory=list)
    driver_version: str | None = None
    cuda_version: str | None = None  # the highest CUDA release the driver supports
    source: str | None = None  # "nvml" | "nvidia-smi" | None
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # a GPU stack that is there but broken

    def as_dict(self) -> dict[str, Any]:
        return {"gpus": [g.as_dict() for g in self.gpus], "driver_version": self.driver_version,
                "cuda_version": self.cuda_version, "source": self.source, "notes": self.notes,
                "error": self.error}


class NvmlUnavailable(Exception):
    """NVML cannot be used here; the message says why in words."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def from_nvml() -> GpuProbe:
    try:
        import pynvml
    except ImportError as exc:
        raise NvmlUnavailable("nvidia-ml-py is not installed") from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound as exc:
        raise NvmlUnavailable("the NVML library (libnvidia-ml) was not found:"
                              " no NVIDIA driver is installed") from exc
    except pynvml.NVMLError as exc:
        raise NvmlUnavailable(f"NVML did not start: {exc}") from exc
    try:
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        probe = GpuProbe(driver_version=_text(pynvml.nvmlSystemGetDriverVersion()),
                         cuda_version=f"{cuda // 1000}.{cuda % 1000 // 10}", source="nvml")
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            probe.gpus.append(Gpu(
                index=index, name=_text(pynvml.nvmlDeviceGetName(handle)),
                memory_total=int(memory.total), memory_free=int(memory.free),
                compute_capability=f"{major}.{minor}",
                bus_id=_text(pynvml.nvmlDeviceGetPciInfo(handle).busId),
            ))
        return probe
    except pynvml.NVMLError as exc:
        raise NvmlUnavailable(f"NVML failed: {exc}") from exc
    finally:
        pynvml.nvmlShutdown()


# --- nvidia-smi ------------------------------------------------------------------

_HEADER = re.compile(r"Driver Version:\s*(?P<driver>[\d.]+)\s+CUDA Version:\s*(?P<cuda>[\d.]+|N/A)")
# "|   0  NVIDIA A100-SXM4-80GB          On  | 00000000:07:00.0 Off |" then the next
# line's "|      4MiB / 81920MiB |".
_GPU_LINE = re.compile(
    r"^\|\s+(?P<index>\d+)\s+(?P<name>.+?)\s+(?:On|Off)\s*\|\s*(?P<bus>[\dA-Fa-f:.]+)")
_MEMORY = re.compile(r"(?P<used>\d+)MiB\s*/\s*(?P<total>\d+)MiB")


def parse_smi_table(text: str) -> GpuProbe:
    """Parse plain ``nvidia-smi`` output. Names may be cut short ("Tesla V100-SXM2...")."""
    probe = GpuProbe(source="nvidia-smi")
    header = _HEADER.search(text)
    if header:
        probe.driver_version = header["driver"]
        probe.cuda_version = None if header["cuda"] == "N/A" else header["cuda"]
    lines = text.splitlines()
    for number, line in enumerate(lines):
        gpu = _GPU_LINE.match(line)
        if not gpu or number + 1 >= len(lines):
            continue
        memory = _MEMORY.search(lines[number + 1])
        if not memory:
            continue
        total, used = int(memory["total"]) * MIB, int(memory["used"]) * MIB
        probe.gpus.append(Gpu(index=int(gpu["index"]), name=gpu["name"].strip(),
                              memory_total=total, memory_free=total - used,
                              bus_id=gpu["bus"]))
    return probe


def _mib(value: str) -> int:
    return int(float(value.replace("MiB", "").strip()) * MIB)


def parse_smi_csv(text: str) -> GpuProbe:
    """Parse ``nvidia-smi --query-gpu=... --format=csv[,nounits]`` (header line required)."""
    probe = GpuProbe(source="nvidia-smi")
    rows = list(csv.reader(io.StringIO(text.strip()), skipinitialspace=True))
    if not rows:
        return probe
    # "memory.total [MiB]" -> "memory.total"
    names = [column.split(" [")[0].strip() for column in rows[0]]
    for row in rows[1:]:
        if len(row) != len(names):
            continue
        value = dict(zip(names, (cell.strip() for cell in row), strict=True))
        probe.driver_version = value.get("driver_version") or probe.driver_version
        cc = value.get("compute_cap")
        probe.gpus.append(Gpu(
            index=int(value["index"]), name=value["name"],
            memory_total=_mib(value["memory.total"]), memory_free=_mib(value["memory.free"]),
            compute_capability=cc if cc and cc not in ("[N/A]", "N/A") else None,
            bus_id=value.get("pci.bus_id"),
        ))
    return probe


class SmiFailed(Exception):
    pass


def _run_smi(executable: str, *args: str, timeout: float) -> str:
    try:
        done = subprocess.run([executable, *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SmiFailed(f"nvidia-smi did not answer within {timeout:g} s (a hung driver?)") \
            from exc
    except OSError as exc:
        raise SmiFailed(f"nvidia-smi could not be started: {exc}") from exc
    if done.returncode != 0:
        said = (done.stdout.strip() or done.stderr.strip()).splitlines()
        raise SmiFailed(said[0] if said else f"nvidia-smi exited with {done.returncode}")
    return done.stdout


def from_smi(executable: str, *, timeout: float = SMI_TIMEOUT) -> GpuProbe:
    """Run nvidia-smi: the CSV query for the GPUs, the table for the CUDA version."""
    fields = list(QUERY_FIELDS)
    try:
        text = _run_smi(executable, f"--query-gpu={','.join(fields)}", "--format=csv,nounits",
                        timeout=timeout)
    except SmiFailed as exc:
        if "compute_cap" not in str(exc):
            raise
        # Drivers before ~R510 do not know this field; ask again without it.
        fields.remove("compute_cap")
        text = _run_smi(executable, f"--query-gpu={','.join(fields)}", "--format=csv,nounits",
                        timeout=timeout)
    probe = parse_smi_csv(text)
    table = parse_smi_table(_run_smi(executable, timeout=timeout))
    probe.cuda_version = table.cuda_version
    if not probe.gpus:
        probe.gpus = table.gpus
    return probe


def probe(*, timeout: float = SMI_TIMEOUT, use_nvml: bool = True) -> GpuProbe:
    notes: list[str] = []
    if use_nvml:
        try:
            return from_nvml()
        except NvmlUnavailable as exc:
            notes.append(f"NVML: {exc}")
    executable = shutil.which("nvidia-smi")
    if executable is None:
        notes.append("nvidia-smi: not on PATH")
        return GpuProbe(notes=notes)
    try:
        found = from_smi(executable, timeout=timeout)
    except SmiFailed as exc:
        return GpuProbe(notes=notes, error=str(exc), source="nvidia-smi")
    found.notes = notes
    if found.cuda_version is None and found.driver_version:
        found.cuda_version = compat.max_cuda_for_driver(found.driver_version)
    return found


def section(found: GpuProbe) -> Section:
    facts = found.as_dict()
    out = Section("nvidia", facts)
    if found.error:
        out.checks.append(fail(
            "nvidia.driver", "NVIDIA driver", f"nvidia-smi is installed but fails: {found.error}",
            "the NVIDIA kernel driver is not running: reboot after installing it, or reinstall"
            " it (Ubuntu: `sudo ubuntu-drivers install`), then check with `nvidia-smi`"))
        return out
    if not found.gpus:
        out.checks.append(ok("nvidia.gpus", "NVIDIA GPU",
                             "no NVIDIA GPU: models run on the CPU (GGUF through llama.cpp)"))
        return out
    driver = found.driver_version or "unknown"
    cuda = found.cuda_version or "unknown"
    out.checks.append(ok("nvidia.driver", "NVIDIA driver",
                         f"driver {driver} (supports CUDA up to {cuda}, read through"
                         f" {found.source})"))
    for gpu in found.gpus:
        cc = f", compute capability {gpu.compute_capability}" if gpu.compute_capability else ""
        out.checks.append(ok(f"nvidia.gpu{gpu.index}", f"GPU {gpu.index}",
                             f"{gpu.name}: {gb(gpu.memory_free)} free of"
                             f" {gb(gpu.memory_total)}{cc}"))
    return out
