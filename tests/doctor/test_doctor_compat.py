"""The compatibility tables and the verdicts drawn from them, on known pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from starchart.doctor import compat, nvidia, pytorch
from starchart.doctor.pytorch import TorchFacts

DATA = Path(__file__).parent.parent / "data" / "nvidia_smi"


def gpus_from(stem: str) -> nvidia.GpuProbe:
    return nvidia.parse_smi_table((DATA / f"{stem}.txt").read_text())


@pytest.mark.parametrize("driver,cuda", [
    ("470.82.01", "11.4"), ("470.199.02", "11.4"), ("535.104.05", "12.2"),
    ("550.54.15", "12.4"), ("570.124.06", "12.8"), ("580.82.07", "13.0"),
    ("450.80.02", "11.0"), ("520.61.05", "11.8"), ("440.33", "10.2"),
])
def test_driver_table_matches_what_nvidia_smi_prints(driver, cuda):
    assert compat.max_cuda_for_driver(driver) == cuda


def test_recorded_headers_agree_with_the_table():
    for table in DATA.glob("*.txt"):
        found = nvidia.parse_smi_table(table.read_text())
        if found.driver_version:
            assert compat.max_cuda_for_driver(found.driver_version) == found.cuda_version, table


@pytest.mark.parametrize("build,driver_cuda,driver,verdict", [
    ("11.3", "11.4", "470.82.01", "ok"),     # the user's torch 1.12.1+cu113 on CUDA 11.4
    ("11.8", "11.4", "470.82.01", "warn"),   # minor-version compatibility within 11.x
    ("12.8", "11.4", "470.82.01", "fail"),   # another major: never
    ("12.1", "12.2", "535.104.05", "ok"),
    ("12.6", "12.2", "535.104.05", "warn"),
    ("12.8", "12.8", "570.124.06", "ok"),
    ("13.0", "12.8", "570.124.06", "fail"),
    ("11.8", "11.0", "450.36.06", "fail"),   # below the 11.x compatibility floor 450.80.02
])
def test_cuda_build_verdicts(build, driver_cuda, driver, verdict):
    assert compat.cuda_build_runs(build, driver_cuda, driver).verdict == verdict


@pytest.mark.parametrize("driver_cuda,driver,torch,cuda,verdict", [
    ("11.4", "470.82.01", "2.7.1", "11.8", "warn"),
    ("12.2", "535.104.05", "2.9.1", "12.6", "warn"),
    ("12.4", "550.54.15", "2.9.1", "12.6", "warn"),
    ("12.8", "570.124.06", "2.9.1", "12.8", "ok"),
    ("13.0", "580.65.06", "2.9.1", "13.0", "ok"),
    ("10.2", "440.33", "1.12.1", "10.2", "ok"),
])
def test_recommended_wheel(driver_cuda, driver, torch, cuda, verdict):
    choice = compat.recommend_torch(driver_cuda, driver)
    assert (choice.torch, choice.cuda, choice.verdict) == (torch, cuda, verdict)
    assert choice.pip_command == (f"pip install torch=={torch} --index-url"
                                  f" https://download.pytorch.org/whl/{compat.cuda_tag(cuda)}")


def test_strict_match_for_cuda_11_4_is_the_users_choice():
    # The user's document installed torch 1.12.1+cu113 on this driver by hand.
    strict = compat.strict_torch("11.4")
    assert strict is not None and (strict.torch, strict.cuda) == ("1.12.1", "11.3")


def test_too_old_driver_has_no_wheel():
    assert compat.recommend_torch("10.1", "418.39").verdict == "fail"


def test_every_row_cites_its_source():
    for row in (*compat.DRIVER_TABLE, *compat.TORCH_TABLE):
        assert "nvidia.com" in row.source or "pytorch.org" in row.source
    assert all(src for _, src in compat.MINOR_COMPAT_FLOOR.values())


def test_tables_are_newest_first():
    cudas = [compat.version(r.cuda) for r in compat.DRIVER_TABLE]
    assert cudas == sorted(cudas, reverse=True)
    drivers = [compat.version(r.linux) for r in compat.DRIVER_TABLE]
    assert drivers == sorted(drivers, reverse=True)
    torches = [compat.version(r.torch) for r in compat.TORCH_TABLE]
    assert torches == sorted(torches, reverse=True)


def by_id(section, id_):
    return next(c for c in section.checks if c.id == id_)


def test_new_torch_on_old_driver_says_why_in_words():
    torch = TorchFacts(installed=True, version="2.9.1+cu128", cuda="12.8", cuda_available=False)
    check = by_id(pytorch.section(torch, gpus_from("470.82.01-1xT4")), "torch.cuda")
    assert check.status == "fail"
    assert check.detail == ("this torch is built for CUDA 12.8, your driver 470.82.01 supports"
                            " up to 11.4")
    assert check.fix is not None
    assert check.fix.startswith("upgrade the driver to ≥ R570 or install torch built for cu118")
    assert "pip install torch==2.7.1 --index-url https://download.pytorch.org/whl/cu118" \
        in check.fix


def test_cpu_torch_on_a_gpu_machine_gets_the_cuda_wheel():
    torch = TorchFacts(installed=True, version="2.13.0+cpu", cuda=None)
    section = pytorch.section(torch, gpus_from("570.124.06-2xRTX4090"))
    check = by_id(section, "torch.cuda")
    assert check.status == "fail" and "CPU-only build" in check.detail
    assert check.fix == "pip install torch==2.9.1 --index-url https://download.pytorch.org/whl/cu128"
    assert section.facts["recommended_install"] == check.fix


def test_working_cuda_torch_is_ok_and_minor_compat_is_a_warning():
    gpus = gpus_from("535.104.05-4xA100")
    exact = TorchFacts(installed=True, version="2.5.1+cu121", cuda="12.1", cuda_available=True,
                       device_count=4, cudnn="90100")
    assert by_id(pytorch.section(exact, gpus), "torch.cuda").status == "ok"
    newer = TorchFacts(installed=True, version="2.9.1+cu126", cuda="12.6", cuda_available=True,
                       device_count=4, cudnn="91002")
    check = by_id(pytorch.section(newer, gpus), "torch.cuda")
    assert check.status == "warn" and "minor-version compatibility" in check.detail
    assert check.fix is not None and "R560" in check.fix


def test_cuda_torch_on_a_cpu_machine_suggests_the_cpu_wheel():
    torch = TorchFacts(installed=True, version="2.9.1+cu128", cuda="12.8")
    check = by_id(pytorch.section(torch, nvidia.GpuProbe()), "torch.cuda")
    assert check.status == "warn"
    assert check.fix == "pip install torch==2.9.1 --index-url https://download.pytorch.org/whl/cpu"


def test_this_machine_torch_is_reported_without_a_gpu():
    found = pytorch.probe()
    section = pytorch.section(found, nvidia.GpuProbe())
    if not found.installed:
        assert by_id(section, "torch.installed").status == "warn"
        return
    assert found.version and by_id(section, "torch.installed").status == "ok"
    assert not found.cuda_available
    assert "whl/cpu" in section.facts["recommended_install"]
    # Without a GPU the doctor reads the build from torch/version.py: the same answer.
    quick = pytorch.probe(import_torch=False)
    assert (quick.version, quick.cuda) == (found.version, found.cuda)


@pytest.mark.parametrize("text,build", [
    ("__version__ = '2.13.0+cpu'\ndebug = False\ncuda: Optional[str] = None\n",
     ("2.13.0+cpu", None)),
    ("__version__ = '2.9.1+cu128'\ncuda: Optional[str] = '12.8'\nhip = None\n",
     ("2.9.1+cu128", "12.8")),
    ("__version__ = '1.12.1+cu113'\ndebug = False\ncuda = '11.3'\n", ("1.12.1+cu113", "11.3")),
])
def test_torch_build_from_version_py(text, build):
    assert pytorch.read_build(text) == build
