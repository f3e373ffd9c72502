"""The NVIDIA probe on recorded nvidia-smi outputs, and NVML's absence on this machine."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fake_smi import write_fake_nvidia_smi as fake_smi

from starchart.doctor import nvidia

DATA = Path(__file__).parent.parent / "data" / "nvidia_smi"
MIB = 1024 * 1024
# The fake nvidia-smi scripts run with PATH reduced to their folder.
CAT, SLEEP = shutil.which("cat"), shutil.which("sleep")

# (file stem, driver, CUDA from the header, GPU count, first GPU's name in the CSV,
#  its total MiB, compute capability or None when the driver cannot report it)
RECORDED = [
    ("470.82.01-1xT4", "470.82.01", "11.4", 1, "Tesla T4", 15109, None),
    ("470.199.02-2xV100", "470.199.02", "11.4", 2, "Tesla V100-SXM2-32GB", 32510, None),
    ("535.104.05-4xA100", "535.104.05", "12.2", 4, "NVIDIA A100-SXM4-80GB", 81920, "8.0"),
    ("550.54.15-1xRTX3090", "550.54.15", "12.4", 1, "NVIDIA GeForce RTX 3090", 24576, "8.6"),
    ("570.124.06-2xRTX4090", "570.124.06", "12.8", 2, "NVIDIA GeForce RTX 4090", 24564, "8.9"),
]


@pytest.mark.parametrize("stem,driver,cuda,count,name,total,cc", RECORDED)
def test_table_parser_reads_every_driver_generation(stem, driver, cuda, count, name, total, cc):
    found = nvidia.parse_smi_table((DATA / f"{stem}.txt").read_text())
    assert found.driver_version == driver
    assert found.cuda_version == cuda
    assert [g.index for g in found.gpus] == list(range(count))
    assert found.gpus[0].memory_total == total * MIB
    # The table cuts long names ("Tesla V100-SXM2..."): a prefix of the real one.
    assert name.startswith(found.gpus[0].name.removesuffix("..."))


@pytest.mark.parametrize("stem,driver,cuda,count,name,total,cc", RECORDED)
def test_csv_parser_reads_units_and_nounits(stem, driver, cuda, count, name, total, cc):
    found = nvidia.parse_smi_csv((DATA / f"{stem}.csv").read_text())
    assert found.driver_version == driver
    assert len(found.gpus) == count
    first = found.gpus[0]
    assert (first.name, first.memory_total, first.compute_capability) == (name, total * MIB, cc)


def test_free_memory_is_total_minus_used():
    table = nvidia.parse_smi_table((DATA / "535.104.05-4xA100.txt").read_text())
    busy = table.gpus[2]
    assert busy.memory_free == (81920 - 40379) * MIB
    csv = nvidia.parse_smi_csv((DATA / "535.104.05-4xA100.csv").read_text())
    assert csv.gpus[2].memory_free == busy.memory_free


def test_probe_falls_back_to_nvidia_smi(tmp_path, monkeypatch):
    fake_smi(tmp_path, "535.104.05-4xA100")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    found = nvidia.probe()  # NVML: no library on this machine -> nvidia-smi
    assert found.source == "nvidia-smi"
    assert any("NVML" in note for note in found.notes)
    assert (found.driver_version, found.cuda_version) == ("535.104.05", "12.2")
    assert [g.compute_capability for g in found.gpus] == ["8.0"] * 4


def test_old_driver_without_compute_cap_is_asked_again(tmp_path, monkeypatch):
    fake_smi(tmp_path, "470.82.01-1xT4", knows_compute_cap=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    found = nvidia.probe(use_nvml=False)
    assert found.error is None
    assert (found.driver_version, found.cuda_version) == ("470.82.01", "11.4")
    assert [(g.name, g.compute_capability) for g in found.gpus] == [("Tesla T4", None)]


def test_driver_not_loaded_is_a_failure_with_a_fix(tmp_path, monkeypatch):
    script = tmp_path / "nvidia-smi"
    script.write_text(f'#!/bin/sh\n{CAT} "{DATA}/driver-not-loaded.txt"\nexit 9\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    found = nvidia.probe(use_nvml=False)
    assert "couldn't communicate with the NVIDIA driver" in (found.error or "")
    [check] = nvidia.section(found).checks
    assert check.status == "fail" and "driver" in (check.fix or "")


def test_hung_nvidia_smi_times_out(tmp_path, monkeypatch):
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nexec {SLEEP} 30\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    found = nvidia.probe(use_nvml=False, timeout=0.5)
    assert "did not answer within 0.5 s" in (found.error or "")


def test_nvml_library_absent_on_this_machine():
    with pytest.raises(nvidia.NvmlUnavailable, match=r"NVML library|not installed"):
        nvidia.from_nvml()


def test_no_gpu_is_a_normal_state(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    found = nvidia.probe()
    assert found.gpus == [] and found.error is None
    assert found.notes == [
        next(n for n in found.notes if n.startswith("NVML")), "nvidia-smi: not on PATH"]
    [check] = nvidia.section(found).checks
    assert check.status == "ok" and "no NVIDIA GPU" in check.detail


def test_gpus_are_listed_one_check_each():
    found = nvidia.parse_smi_csv((DATA / "570.124.06-2xRTX4090.csv").read_text())
    found.cuda_version = "12.8"
    checks = nvidia.section(found).checks
    assert [c.id for c in checks] == ["nvidia.driver", "nvidia.gpu0", "nvidia.gpu1"]
    assert "compute capability 8.9" in checks[1].detail
