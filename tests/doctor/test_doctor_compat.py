"""The compatibility tables and the verdicts drawn from them, on known pairs."""

from __future__ import annotations

import sys
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
    ("11.4", "470.82.01", "2.7.1", "11.8", "warn"),  # the last release with a CUDA 11 build
    ("12.2", "535.104.05", "2.15.0", "12.8", "warn"),
    ("12.4", "550.54.15", "2.15.0", "12.8", "warn"),
    ("12.8", "570.124.06", "2.15.0", "12.8", "ok"),
    ("13.0", "580.65.06", "2.15.0", "13.0", "ok"),
])
def test_recommended_wheel(driver_cuda, driver, torch, cuda, verdict):
    choice = compat.recommend_torch(driver_cuda, driver, python="3.11.7")
    assert choice is not None
    assert (choice.torch, choice.cuda, choice.verdict) == (torch, cuda, verdict)
    assert choice.requirement == f"torch=={torch}+{compat.cuda_tag(cuda)}"
    assert choice.index_url == f"https://download.pytorch.org/whl/{compat.cuda_tag(cuda)}"


def test_volta_gets_a_build_with_its_kernels():
    # torch's CUDA 12.8+ builds have no sm_70 kernels: a V100 on driver 570 needs cu126.
    choice = compat.recommend_torch("12.8", "570.124.06", python="3.11", capabilities=["7.0"])
    assert choice is not None and (choice.torch, choice.cuda) == ("2.10.0", "12.6")


def test_strict_match_for_cuda_11_4_is_not_the_users_choice():
    # The user's document installed torch 1.12.1+cu113 by hand: no wheels for Python 3.11
    # and below starchart's torch>=2.4, so nothing is an exact match for CUDA 11.4 now.
    assert compat.strict_torch("11.4", python="3.11") is None
    row = next(r for r in compat.TORCH_TABLE if r.torch == "1.12.1")
    assert not compat.python_has_wheels(row, "3.11.7")
    assert compat.python_has_wheels(row, "3.10.12")


def test_too_old_driver_has_no_wheel():
    assert compat.recommend_torch("10.2", "440.33") is None


def test_torch_floor_is_starchart_s_own():
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert f'"torch>={compat.TORCH_FLOOR}"' in pyproject


def test_bitsandbytes_follows_torch_s_cuda_build():
    assert compat.recommend_bnb("11.8", "2.7.1").bnb == "0.46.1"
    assert compat.recommend_bnb("12.8", "2.15.0").bnb == "0.48.2"
    assert compat.recommend_bnb("13.0", "2.15.0").bnb == "0.48.2"
    assert compat.recommend_bnb(None, "2.13.0") is None
    assert compat.recommend_bnb("11.3", "1.12.1") is None  # the document's build-it-yourself case


def test_every_row_cites_its_source():
    for row in (*compat.DRIVER_TABLE, *compat.TORCH_TABLE):
        assert "nvidia.com" in row.source or "pytorch" in row.source
    assert all("bitsandbytes" in row.source for row in compat.BNB_TABLE)
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
    assert check.fix == (f"upgrade the driver to ≥ R570 or install torch built for cu118:"
                         f" {sys.executable} -m pip install torch==2.7.1+cu118 --index-url"
                         " https://download.pytorch.org/whl/cu118")


def test_cpu_torch_on_a_gpu_machine_gets_the_cuda_wheel():
    torch = TorchFacts(installed=True, version="2.13.0+cpu", cuda=None)
    section = pytorch.section(torch, gpus_from("570.124.06-2xRTX4090"))
    check = by_id(section, "torch.cuda")
    assert check.status == "fail" and "CPU-only build" in check.detail
    assert check.fix == (f"{sys.executable} -m pip install torch==2.15.0+cu128 --index-url"
                         " https://download.pytorch.org/whl/cu128")
    assert section.facts["recommended_install"] == check.fix
    assert section.facts["needs_install"] is True


def test_working_newer_torch_on_driver_570_is_not_downgraded():
    torch = TorchFacts(installed=True, version="2.16.0+cu128", cuda="12.8", cuda_available=True,
                       device_count=2, cudnn="91100")
    section = pytorch.section(torch, gpus_from("570.124.06-2xRTX4090"))
    assert by_id(section, "torch.cuda").status == "ok"
    assert section.facts["needs_install"] is False
    assert all("2.15.0" not in (c.fix or "") for c in section.checks)


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
    assert check.fix == (f"{sys.executable} -m pip uninstall -y torch &&"
                         f" {sys.executable} -m pip install torch==2.13.0")


def test_this_machine_torch_is_reported_without_a_gpu():
    found = pytorch.probe()
    section = pytorch.section(found, nvidia.GpuProbe())
    if not found.installed:
        assert by_id(section, "torch.installed").status == "warn"
        return
    assert found.version and by_id(section, "torch.installed").status == "ok"
    assert not found.cuda_available
    assert section.facts["recommended_install"] == f"{sys.executable} -m pip install torch==2.13.0"
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
