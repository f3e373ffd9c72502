"""The install plan on the recorded boxes, line by line, run as the Makefile runs it:
with a bare interpreter (no site-packages: the plan needs nothing installed) and a
fake nvidia-smi (and nvcc) replaying recorded outputs."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_smi import write_fake_nvidia_smi

SRC = Path(__file__).parents[2] / "src"
ROOT = SRC.parent
PY = "/venv/bin/python"  # the --python the commands are written for
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)
PORTABLE = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
            " -DGGML_BMI2=ON")
CU118 = [f"{PY} -m pip install torch==2.7.1+cu118 --index-url"
         " https://download.pytorch.org/whl/cu118",
         f"{PY} -m pip install bitsandbytes==0.46.1"]
CU128 = [f"{PY} -m pip install torch==2.15.0+cu128 --index-url"
         " https://download.pytorch.org/whl/cu128",
         f"{PY} -m pip install bitsandbytes==0.48.2"]


def wheelhouse(home: Path, args: str) -> Path:
    # The Makefile's old key: `echo '<pin> <args>' | sha256sum | cut -c1-12`.
    key = hashlib.sha256(f"llama-cpp-python==0.3.36 {args}\n".encode()).hexdigest()[:12]
    return home / ".cache" / "starchart" / "wheels" / key


def llama_lines(home: Path, args: str, *, cached: bool = False) -> list[str]:
    house = wheelhouse(home, args)
    env = f"CMAKE_ARGS='{args}'" if " " in args else f"CMAKE_ARGS={args}"
    build = [f"{env} {PY} -m pip wheel --no-deps --no-cache-dir -w {house}"
             " llama-cpp-python==0.3.36"]
    return ([] if cached else build) + [
        f"{PY} -m pip install --no-deps --no-index --force-reinstall --find-links"
        f" {house} llama-cpp-python==0.3.36"]


def fake_nvcc(folder: Path, release: str) -> None:
    script = folder / "nvcc"
    script.write_text("#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver'\n"
                      f"echo 'Cuda compilation tools, release {release}, V{release}.99'\n")
    script.chmod(0o755)


def run_plan(tmp_path: Path, stem: str | None, nvcc: str | None = None) -> list[str]:
    """The plan's output lines on a recorded box (stem None: no nvidia-smi at all)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if stem is not None:
        write_fake_nvidia_smi(bin_dir, stem, knows_compute_cap=not stem.startswith("470"))
    if nvcc is not None:
        fake_nvcc(bin_dir, nvcc)
    done = subprocess.run(
        [BASE_PYTHON, "-S", "-m", "starchart.doctor.install_plan", "--python", PY],
        cwd=SRC, capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def commands(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("#")]


@pytest.mark.parametrize("stem,expected", [
    ("470.82.01-1xT4", CU118),
    ("470.199.02-2xV100", CU118),
    ("535.104.05-4xA100", CU128),
    ("550.54.15-1xRTX3090", CU128),
    ("570.124.06-2xRTX4090", CU128),
])
def test_plan_on_each_recorded_box(tmp_path, stem, expected):
    lines = run_plan(tmp_path, stem)
    assert commands(lines) == expected + llama_lines(tmp_path, PORTABLE)
    notes = "\n".join(line for line in lines if line.startswith("#"))
    # No nvcc: the portable CPU build of llama.cpp, and how to get GPU offload.
    assert "llama.cpp GPU offload: no CUDA toolkit (nvcc) here" in notes
    assert 'CMAKE_ARGS="-DGGML_CUDA=on"' in notes
    if stem.startswith("470"):
        assert "runs through CUDA minor-version compatibility" in notes


def test_plan_without_a_gpu_is_the_makefile_s_cpu_install(tmp_path):
    lines = run_plan(tmp_path, None)
    assert commands(lines) == [f"{PY} -m pip install torch==2.13.0",
                               *llama_lines(tmp_path, PORTABLE)]
    assert "bitsandbytes" not in "\n".join(lines)


def test_cached_wheel_is_not_built_again(tmp_path):
    house = wheelhouse(tmp_path, PORTABLE)
    house.mkdir(parents=True)
    (house / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl").write_bytes(b"")
    lines = run_plan(tmp_path, None)
    assert commands(lines)[1:] == llama_lines(tmp_path, PORTABLE, cached=True)


def test_nvcc_that_fits_the_driver_builds_llama_cpp_with_cuda(tmp_path):
    lines = run_plan(tmp_path, "570.124.06-2xRTX4090", nvcc="12.4")
    assert commands(lines) == CU128 + llama_lines(tmp_path, "-DGGML_CUDA=on")
    assert "GPU offload" not in "\n".join(lines)


def test_nvcc_newer_than_the_driver_keeps_the_cpu_build(tmp_path):
    # This machine's own case: a CUDA 13.0 toolkit; on the document's driver 470 it can't run.
    lines = run_plan(tmp_path, "470.82.01-1xT4", nvcc="13.0")
    assert commands(lines) == CU118 + llama_lines(tmp_path, PORTABLE)
    assert any("nvcc 13.0 is newer than the driver's CUDA 11.4" in line for line in lines)


def test_make_install_plan_prints_the_module_s_lines():
    make = shutil.which("make")
    if make is None or not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("needs make and the project's .venv (make install)")
    done = subprocess.run([make, "-s", "install-plan"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    direct = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m",
                             "starchart.doctor.install_plan"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False, env={"PYTHONPATH": str(SRC),
                                                                    "PATH": "/usr/bin:/bin"})
    assert done.stdout.splitlines()[-1] == direct.stdout.splitlines()[-1]
    assert "torch" in done.stdout and "llama-cpp-python==0.3.36" in done.stdout
