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

Standard library only: ``make`` imports this (through ``install_plan``) with
the fresh venv's interpreter before any package is installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

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
TORCH_RELEASE_MATRIX = (
    "PyTorch RELEASE.md 'Release Compatibility Matrix' (github.com/pytorch/pytorch/blob/main/"
    "RELEASE.md) and the wheel index download.pytorch.org/whl/<cuXYZ>/torch"
)
# Releases newer than the last one that page listed when this table was written;
# their CUDA builds are the matrix's for that line, narrowed to the builds every
# release since 2.10 kept (cu128, cu130), so a wrong guess costs recency, not a
# failed install. The release list itself is `pip index versions torch`, 2026-12-01.
TORCH_MATRIX_INFERRED = TORCH_RELEASE_MATRIX + "; builds narrowed to cu128/cu130 (see compat.py)"
TORCH_INDEX = "https://download.pytorch.org/whl"
# torch's CUDA 12.8+ builds compile kernels for sm_75 (Turing) and up only: no
# Maxwell/Pascal/Volta (V100 is sm_70). Source: the architectures each wheel lists
# (torch.cuda.get_arch_list()), tabulated per build in moi90/pytorch_compute_capabilities.
SM75_ONLY_FROM_CUDA = "12.8"
BNB_RELEASES = (
    "bitsandbytes release notes, 'binaries built for CUDA …' per release"
    " (github.com/bitsandbytes-foundation/bitsandbytes/releases)"
)


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
    """One PyTorch release: its CUDA builds (``cu121`` = 12.1) and the Pythons it has wheels for."""

    torch: str
    cuda: tuple[str, ...]
    python: tuple[str, str]  # oldest and newest CPython with wheels
    source: str = TORCH_PREVIOUS_VERSIONS


# Newest first, one row per release line (its last patch release). Releases
# after the first row are not known to this table.
TORCH_TABLE: tuple[TorchRow, ...] = (
    TorchRow("2.15.0", ("12.8", "13.0"), ("3.10", "3.14"), TORCH_MATRIX_INFERRED),
    TorchRow("2.14.1", ("12.8", "13.0"), ("3.10", "3.14"), TORCH_MATRIX_INFERRED),
    TorchRow("2.13.0", ("12.8", "13.0"), ("3.10", "3.14"), TORCH_MATRIX_INFERRED),
    TorchRow("2.12.1", ("12.8", "13.0"), ("3.10", "3.14"), TORCH_MATRIX_INFERRED),
    TorchRow("2.11.0", ("12.8", "13.0"), ("3.10", "3.14"), TORCH_MATRIX_INFERRED),
    TorchRow("2.10.0", ("12.6", "12.8", "13.0"), ("3.10", "3.14"), TORCH_RELEASE_MATRIX),
    TorchRow("2.9.1", ("12.6", "12.8", "13.0"), ("3.10", "3.14")),
    TorchRow("2.8.0", ("12.6", "12.8", "12.9"), ("3.9", "3.13")),
    TorchRow("2.7.1", ("11.8", "12.6", "12.8"), ("3.9", "3.13")),
    TorchRow("2.6.0", ("11.8", "12.4", "12.6"), ("3.9", "3.13")),
    TorchRow("2.5.1", ("11.8", "12.1", "12.4"), ("3.9", "3.13")),
    TorchRow("2.4.1", ("11.8", "12.1", "12.4"), ("3.8", "3.12")),
    TorchRow("2.3.1", ("11.8", "12.1"), ("3.8", "3.12")),
    TorchRow("2.2.2", ("11.8", "12.1"), ("3.8", "3.12")),
    TorchRow("2.1.2", ("11.8", "12.1"), ("3.8", "3.11")),
    TorchRow("2.0.1", ("11.7", "11.8"), ("3.8", "3.11")),
    TorchRow("1.13.1", ("11.6", "11.7"), ("3.7", "3.11")),
    TorchRow("1.12.1", ("10.2", "11.3", "11.6"), ("3.7", "3.10")),
)
# starchart's own floor (pyproject: torch>=2.4); a test keeps the two equal.
TORCH_FLOOR = "2.4"


@dataclass(frozen=True)
class BnbRow:
    """A bitsandbytes release and the CUDA range its wheels ship native libraries for."""

    bnb: str
    cuda_min: str
    cuda_max: str
    torch_min: str
    source: str = BNB_RELEASES


# Newest first. bitsandbytes picks its library by torch.version.cuda, so the
# row is chosen by the CUDA build of torch, not by the driver. Wheels are
# py3-none (any CPython >= 3.9).
BNB_TABLE: tuple[BnbRow, ...] = (
    BnbRow("0.48.2", "12.0", "13.0", "2.3"),
    BnbRow("0.46.1", "11.8", "12.8", "2.2"),
    BnbRow("0.45.5", "11.8", "12.6", "2.0"),
)

Verdict = Literal["ok", "warn", "fail"]


Version = tuple[int, ...]
_RELEASE = re.compile(r"^\s*v?(\d+(?:\.\d+)*)")


def version(text: str) -> Version | None:
    """'470.82.01' -> (470, 82, 1); '2.9.1+cu128' -> (2, 9, 1): the numeric release,
    which is all these tables compare (no pre-releases in them)."""
    match = _RELEASE.match(text)
    return tuple(int(p) for p in match[1].split(".")) if match else None


def _at_least(text: str, floor: str) -> bool:
    have, need = version(text), version(floor)
    return have is not None and need is not None and have >= need


def _cuda_key(cuda: str) -> tuple[int, int]:
    major, _, minor = cuda.partition(".")
    return int(major), int(minor.split(".")[0] or 0)


def cuda_tag(cuda: str) -> str:
    """'12.8' -> 'cu128', the name of PyTorch's wheel index."""
    major, minor = _cuda_key(cuda)
    return f"cu{major}{minor}"


def max_cuda_for_driver(driver: str, *, windows: bool = False) -> str | None:
    """The highest CUDA release a driver fully supports (what nvidia-smi prints)."""
    if version(driver) is None:
        return None
    for row in DRIVER_TABLE:
        if _at_least(driver, row.windows if windows else row.linux):
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
    same_major = _cuda_key(driver_cuda)[0] == major
    if floor and same_major and (driver is None or _at_least(driver, floor[0])):
        return Compatibility("warn", f"built for CUDA {build}, the driver supports up to"
                                     f" {driver_cuda}: runs through CUDA minor-version"
                                     " compatibility (no PTX JIT for newer GPUs)")
    return Compatibility("fail", f"built for CUDA {build}, the driver supports only up to"
                                 f" {driver_cuda}")


def python_has_wheels(row: TorchRow, python: str) -> bool:
    parsed = version(python)
    key = parsed[:2] if parsed else None
    low, high = (version(v) for v in row.python)
    return key is not None and low is not None and high is not None and low <= key <= high


def builds_for_gpus(row: TorchRow, capabilities: list[str | None]) -> tuple[str, ...]:
    """The row's CUDA builds that have kernels for every GPU (unknown capability: all)."""
    known = [version(c) for c in capabilities if c]
    if known and min(k for k in known if k) < (7, 5):
        return tuple(c for c in row.cuda if _cuda_key(c) < _cuda_key(SM75_ONLY_FROM_CUDA))
    return row.cuda


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
    def requirement(self) -> str:
        """The exact pin: with the build's local label, so pip replaces a CPU build of the
        same release (``torch==2.7.1`` alone is satisfied by ``2.7.1+cpu``)."""
        return f"torch=={self.torch}+{cuda_tag(self.cuda)}" if self.cuda else \
            f"torch=={self.torch}"


def _eligible(python: str) -> list[TorchRow]:
    return [row for row in TORCH_TABLE
            if _at_least(row.torch, TORCH_FLOOR) and python_has_wheels(row, python)]


def recommend_torch(driver_cuda: str | None, driver: str | None = None, *,
                    python: str = "3.11", capabilities: list[str | None] | None = None
                    ) -> TorchChoice | None:
    """The newest PyTorch CUDA wheel for this driver, this Python and these GPUs
    (releases at starchart's floor and up); None when none runs here.

    Within a release the newest fully supported CUDA build wins; a release whose
    builds all need minor-version compatibility gets its oldest such build
    (the nearest to the driver).
    """
    if driver_cuda is None:
        return None
    for row in _eligible(python):
        builds = builds_for_gpus(row, capabilities or [])
        verdicts = [(cuda, cuda_build_runs(cuda, driver_cuda, driver).verdict)
                    for cuda in builds]
        full = [c for c, v in verdicts if v == "ok"]
        if full:
            return TorchChoice(row.torch, max(full, key=_cuda_key), "ok", row.source)
        minor = [c for c, v in verdicts if v == "warn"]
        if minor:
            return TorchChoice(row.torch, min(minor, key=_cuda_key), "warn", row.source)
    return None


def strict_torch(driver_cuda: str, *, python: str = "3.11") -> TorchChoice | None:
    """The newest eligible release with a build the driver supports fully (no
    compatibility mode)."""
    for row in _eligible(python):
        full = [c for c in row.cuda if _cuda_key(c) <= _cuda_key(driver_cuda)]
        if full:
            return TorchChoice(row.torch, max(full, key=_cuda_key), "ok", row.source)
    return None


def recommend_bnb(torch_cuda: str | None, torch_version: str) -> BnbRow | None:
    """The newest bitsandbytes with a native library for this torch's CUDA build."""
    if torch_cuda is None:
        return None
    key = _cuda_key(torch_cuda)
    for row in BNB_TABLE:
        if _cuda_key(row.cuda_min) <= key <= _cuda_key(row.cuda_max) and \
                _at_least(torch_version, row.torch_min):
            return row
    return None
