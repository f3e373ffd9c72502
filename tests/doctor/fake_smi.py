"""A stand-in for the nvidia-smi executable, replaying recorded outputs (tests only)."""

from __future__ import annotations

import shutil
from pathlib import Path

NVIDIA_SMI_DATA = Path(__file__).parent.parent / "data" / "nvidia_smi"


def write_fake_nvidia_smi(folder: Path, stem: str, *, knows_compute_cap: bool = True) -> Path:
    """An executable named nvidia-smi that answers with a recorded output, like the
    real one: the CSV for --query-gpu, the table otherwise; old drivers reject the
    compute_cap field with exit code 2. It works with PATH reduced to ``folder``."""
    cat, data = shutil.which("cat"), NVIDIA_SMI_DATA
    script = folder / "nvidia-smi"
    reject = "" if knows_compute_cap else (
        f'case "$*" in *compute_cap*) {cat} "{data}/470-compute_cap-error.txt"; exit 2;; esac\n')
    script.write_text(
        "#!/bin/sh\n" + reject +
        f'case "$*" in *--query-gpu*) {cat} "{data}/{stem}.csv";;'
        f' *) {cat} "{data}/{stem}.txt";; esac\n')
    script.chmod(0o755)
    return script
