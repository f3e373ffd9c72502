"""The compatibility tables: NVIDIA driver -> CUDA, PyTorch release -> CUDA builds.

Every row names where it came from, so a wrong verdict can be traced to a
row and a row can be checked against its source. This module is the only
place these facts live; the checks and the install recommendation read them.

Two rules from NVIDIA's CUDA compatibility guide decide whether a program
built for CUDA X.Y runs on a driver:

* full support: the driver is at least the one the X.Y toolkit shipped with
  (``nvidia-smi`` prints this as "CUDA Version", the highest X.Y it supports);
* minor-version compatibility: a driver of the same major family, at least the
  family's floor (450.80.02 for 11.x, 525.60.13 for 12.x, 580 for 13.x), runs
  X.Y built programs too, minus PTX JIT of newer code. PyTorch wheels ship
  compiled kernels, so they run this way; we report it as a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from packaging.version import InvalidVersion, Version

CUDA_RELEASE_NOTES = (
    "NVIDIA CUDA Toolkit Release Notes, table 'CUDA Toolkit and Corresponding Driver"
    " Versions' (docs.nvidia.com/cuda/cuda-toolkit-release-notes)"
)
CUDA_COMPAT_GUIDE = (
    "NVIDIA CUDA Compatibility guide, 'Minor Version Compatibility' table"
    " (docs.nvidia.com/deploy/cuda-compatibility)"
)
TORCH_PREVIOUS_VERSIONS = (
    "PyTorch 'Installing previous versions of PyTorch' page, pip wheel commands"
    " (pytorch.org/get-started/previous-versions)"
)
TORCH_INDEX = "https://download.pytorch.org/whl"


@dataclass(frozen=True)
class DriverRow:
    """The lowest driver that fully supports a CUDA release (the toolkit's own driver)."""

    cuda: str
    linux: str
    windows: str
    source: str = CUDA_RELEASE_NOTES


# Newest first. GA releases; an update release only where it raised the floor
# is left out on purpose: a driver that runs X.Y GA runs X.Y programs.
DRIVER_TABLE: tuple[DriverRow, ...] = (
    DriverRow("13.0", "580.65.06", "580.88"),
    DriverRow("12.9", "575.51.03", "576.02"),
    DriverRow("12.8", "570.26", "570.65"),
    DriverRow("12.6", "560.28.03", "560.76"),
    DriverRow("12.5", "555.42.02", "555.85"),
    DriverRow("12.4", "550.54.14", "551.61"),
    DriverRow("12.3", "545.23.06", "545.84"),
    DriverRow("12.2", "535.54.03", "536.25"),
    DriverRow("12.1", "530.30.02", "531.14"),
    DriverRow("12.0", "525.60.13", "527.41"),
    DriverRow("11.8", "520.61.05", "520.06"),
    DriverRow("11.7", "515.43.04", "516.01"),
    DriverRow("11.6", "510.39.01", "511.23"),
    DriverRow("11.5", "495.29.05", "496.04"),
    DriverRow("11.4", "470.42.01", "471.11"),
    DriverRow("11.3", "465.19.01", "465.89"),
    DriverRow("11.2", "460.27.03", "460.82"),
    DriverRow("11.1", "455.23", "456.38"),
    DriverRow("11.0", "450.36.06", "451.22"),
    DriverRow("10.2", "440.33", "441.22"),
    DriverRow("10.1", "418.39", "418.96"),
    DriverRow("10.0", "410.48", "411.31"),
)

# CUDA major -> the lowest driver that runs any X.* program (minor-version compatibility).
MINOR_COMPAT_FLOOR: dict[int, tuple[str, str]] = {
    13: ("580.65.06", CUDA_COMPAT_GUIDE),
    12: ("525.60.13", CUDA_COMPAT_GUIDE),
    11: ("450.80.02", CUDA_COMPAT_GUIDE),
}


@dataclass(frozen=True)
class TorchRow:
    """One PyTorch release and the CUDA builds published for it (``cu121`` = 12.1)."""

    torch: str
    cuda: tuple[str, ...]
    source: str = TORCH_PREVIOUS_VERSIONS


# Newest first. Releases after the last row are not known to this table.
TORCH_TABLE: tuple[TorchRow, ...] = (
    TorchRow("2.9.1", ("12.6", "12.8", "13.0")),
    TorchRow("2.8.0", ("12.6", "12.8", "12.9")),
    TorchRow("2.7.1", ("11.8", "12.6", "12.8")),
    TorchRow("2.6.0", ("11.8", "12.4", "12.6")),
    TorchRow("2.5.1", ("11.8", "12.1", "12.4")),
    TorchRow("2.4.1", ("11.8", "12.1", "12.4")),
    TorchRow("2.3.1", ("11.8", "12.1")),
    TorchRow("2.2.2", ("11.8", "12.1")),
    TorchRow("2.1.2", ("11.8", "12.1")),
    TorchRow("2.0.1", ("11.7", "11.8")),
    TorchRow("1.13.1", ("11.6", "11.7")),
    TorchRow("1.12.1", ("10.2", "11.3", "11.6")),
)

Verdict = Literal["ok", "warn", "fail"]


def version(text: str) -> Version | None:
    try:
        return Version(text.strip())
    except InvalidVersion:
        return None


def _cuda_key(cuda: str) -> tuple[int, int]:
    major, _, minor = cuda.partition(".")
    return int(major), int(minor or 0)


def cuda_tag(cuda: str) -> str:
    """'12.8' -> 'cu128', the name of PyTorch's wheel index."""
    major, minor = _cuda_key(cuda)
    return f"cu{major}{minor}"


def max_cuda_for_driver(driver: str, *, windows: bool = False) -> str | None:
    """The highest CUDA release a driver fully supports (what nvidia-smi prints)."""
    have = version(driver)
    if have is None:
        return None
    for row in DRIVER_TABLE:
        need = version(row.windows if windows else row.linux)
        if need is not None and have >= need:
            return row.cuda
    return None


def min_driver_for_cuda(cuda: str, *, windows: bool = False) -> str | None:
    """The lowest driver that fully supports ``cuda`` (its GA row, or the next one up)."""
    key = _cuda_key(cuda)
    best: DriverRow | None = None
    for row in DRIVER_TABLE:  # newest first: keep the oldest row still >= key
        if _cuda_key(row.cuda) >= key:
            best = row
    if best is None:
        return None
    return best.windows if windows else best.linux


def driver_branch(driver: str) -> str:
    """'570.26' -> 'R570', how NVIDIA names driver branches."""
    return "R" + driver.split(".")[0]


@dataclass(frozen=True)
class Compatibility:
    verdict: Verdict
    reason: str


def cuda_build_runs(build: str, driver_cuda: str, driver: str | None = None) -> Compatibility:
    """Whether a program built for CUDA ``build`` runs on a driver that supports up to
    ``driver_cuda`` (and, for the minor-version rule, is version ``driver``)."""
    if _cuda_key(build) <= _cuda_key(driver_cuda):
        return Compatibility("ok", f"built for CUDA {build}, the driver supports up to"
                                   f" {driver_cuda}")
    major = _cuda_key(build)[0]
    floor = MINOR_COMPAT_FLOOR.get(major)
    have = version(driver) if driver else None
    same_major = _cuda_key(driver_cuda)[0] == major
    if floor and same_major and (have is None or have >= Version(floor[0])):
        return Compatibility("warn", f"built for CUDA {build}, the driver supports up to"
                                     f" {driver_cuda}: runs through CUDA minor-version"
                                     " compatibility (no PTX JIT for newer GPUs)")
    return Compatibility("fail", f"built for CUDA {build}, the driver supports only up to"
                                 f" {driver_cuda}")


@dataclass(frozen=True)
class TorchChoice:
    torch: str
    cuda: str | None
    verdict: Verdict
    source: str

    @property
    def index_url(self) -> str:
        return f"{TORCH_INDEX}/{cuda_tag(self.cuda) if self.cuda else 'cpu'}"

    @property
    def pip_command(self) -> str:
        return f"pip install torch=={self.torch} --index-url {self.index_url}"


def recommend_torch(driver_cuda: str | None, driver: str | None = None) -> TorchChoice:
    """The newest PyTorch wheel that runs on this driver, as an exact pip line.

    Within a release the newest fully supported CUDA build wins; a release whose
    builds all need minor-version compatibility gets its oldest such build
    (the nearest to the driver). No driver: the CPU wheel of the newest release.
    """
    newest = TORCH_TABLE[0]
    if driver_cuda is None:
        return TorchChoice(newest.torch, None, "ok", newest.source)
    for row in TORCH_TABLE:
        verdicts = [(cuda, cuda_build_runs(cuda, driver_cuda, driver).verdict)
                    for cuda in row.cuda]
        full = [c for c, v in verdicts if v == "ok"]
        if full:
            return TorchChoice(row.torch, max(full, key=_cuda_key), "ok", row.source)
        minor = [c for c, v in verdicts if v == "warn"]
        if minor:
            return TorchChoice(row.torch, min(minor, key=_cuda_key), "warn", row.source)
    return TorchChoice(newest.torch, None, "fail", newest.source)


def strict_torch(driver_cuda: str) -> TorchChoice | None:
    """The newest release with a build the driver supports fully (no compatibility mode)."""
    for row in TORCH_TABLE:
        full = [c for c in row.cuda if _cuda_key(c) <= _cuda_key(driver_cuda)]
        if full:
            return TorchChoice(row.torch, max(full, key=_cuda_key), "ok", row.source)
    return None
