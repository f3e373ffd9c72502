"""bitsandbytes, llama.cpp, the system probe and package versions."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace

import pytest

from starchart.doctor import bnb, install_plan, llamacpp, system, versions
from starchart.doctor.nvidia import Gpu, GpuProbe
from starchart.doctor.pytorch import TorchFacts, default_plan

ONE_GPU = GpuProbe(gpus=[Gpu(0, "NVIDIA GeForce RTX 3090", 24 * 1024**3, 23 * 1024**3, "8.6")],
                   driver_version="550.54.15", cuda_version="12.4", source="nvidia-smi")

PLAN = default_plan(ONE_GPU)  # driver 550: torch 2.15.0+cu128, bitsandbytes 0.48.2
BNB_LINE = f"{sys.executable} -m pip install bitsandbytes==0.48.2"
TORCH_LINE = (f"{sys.executable} -m pip install torch==2.15.0+cu128 --index-url"
              " https://download.pytorch.org/whl/cu128")

# Error texts as bitsandbytes prints them (the user's document met the first three and
# fixed them by hand: scipy, triton, a patched import, a library built from source).
# Each maps to the one pinned release that needs none of that.
BNB_ERRORS = [
    ("ModuleNotFoundError: No module named 'scipy'", BNB_LINE),
    ("ModuleNotFoundError: No module named 'triton.language'", BNB_LINE),
    ("  File \".../bitsandbytes/triton/triton_utils.py\", line 5, in is_triton_available\n"
     "    return importlib.util.find_spec(\"triton\") is not None\n"
     "AttributeError: module 'importlib' has no attribute 'util'", BNB_LINE),
    ("CUDA SETUP: Required library version not found: libbitsandbytes_cuda113.so. Maybe you"
     " need to compile it from source?\nRuntimeError: CUDA Setup failed despite GPU being"
     " available.", BNB_LINE),
    ("RuntimeError: Configured CUDA binary not found at .../libbitsandbytes_cuda129.so",
     BNB_LINE),
    ("UserWarning: The installed version of bitsandbytes was compiled without GPU support.",
     BNB_LINE),
    ("OSError: libcudart.so.11.0: cannot open shared object file: No such file or directory",
     TORCH_LINE),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB", "free GPU"),
]


@pytest.mark.parametrize("error,fix", BNB_ERRORS)
def test_known_bitsandbytes_failures_map_to_fixes(error, fix):
    assert fix in bnb.diagnose(error, PLAN).fix


def test_unknown_bitsandbytes_failure_shows_its_last_line():
    found = bnb.diagnose("Traceback (most recent call last):\n  ...\nValueError: odd thing\n",
                         PLAN)
    assert found.problem == "ValueError: odd thing"
    assert f"{sys.executable} -m bitsandbytes" in found.fix


def test_bitsandbytes_probe_runs_in_its_own_process():
    result = bnb.run_probe(timeout=60)
    if importlib.util.find_spec("bitsandbytes") is None:
        assert not result.imported
        assert "No module named 'bitsandbytes'" in (result.error or "")
    else:  # installed but no GPU here: the 8-bit matmul cannot run
        assert result.imported and not result.matmul


def test_bitsandbytes_checks_depend_on_the_gpu():
    cpu = bnb.section(GpuProbe(), TorchFacts(installed=True), default_plan(GpuProbe()),
                      run=False)
    assert [c.status for c in cpu.checks] == ["ok"]
    if bnb.installed_version() is None:
        gpu = bnb.section(ONE_GPU, TorchFacts(installed=True), PLAN, run=False)
        [check] = gpu.checks
        assert check.status == "warn" and check.fix == BNB_LINE
        assert gpu.facts["needs_install"] is True


SYSTEM_INFOS = {
    "cpu-avx2": ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 |"
                 " BMI2 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ",
                 ["CPU"], ["AVX", "AVX2", "F16C", "FMA"]),
    "cuda": ("CUDA : ARCHS = 500,610,700,750,800,860,890 | USE_GRAPHS = 1 |"
             " PEER_MAX_BATCH_SIZE = 128 | CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 |"
             " F16C = 1 | FMA = 1 | AVX512 = 1 | LLAMAFILE = 1 | OPENMP = 1 | ",
             ["CUDA", "CPU"], ["AVX", "AVX2", "F16C", "FMA", "AVX512F"]),
    "metal": ("Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 |"
              " DOTPROD = 1 | LLAMAFILE = 1 | ACCELERATE = 1 | ",
              ["Metal", "CPU"], ["NEON"]),
    "old-flat": ("AVX = 1 | AVX_VNNI = 0 | AVX2 = 1 | AVX512 = 0 | AVX512_VBMI = 0 |"
                 " AVX512_VNNI = 0 | FMA = 1 | NEON = 0 | ARM_FMA = 0 | F16C = 1 | FP16_VA = 0 |"
                 " WASM_SIMD = 0 | BLAS = 1 | SSE3 = 1 | SSSE3 = 1 | VSX = 0 | CUBLAS = 1 | ",
                 ["CUDA", "CPU"], ["AVX", "AVX2", "FMA", "F16C"]),
}


@pytest.mark.parametrize("name", SYSTEM_INFOS)
def test_llama_cpp_system_info_parser(name):
    text, backends, simd = SYSTEM_INFOS[name]
    build = llamacpp.parse_system_info(text)
    assert build.backends == backends
    assert sorted(build.simd) == sorted(simd)


def test_llama_cpp_on_this_machine():
    found = llamacpp.probe()
    assert found.installed and found.version and "CPU" in (found.system_info or "")
    section = llamacpp.section(found, system.facts(system.model_cache_dir()), GpuProbe(),
                               default_plan(GpuProbe()))
    assert section.checks[0].status in ("ok", "warn")
    assert found.version in section.checks[0].detail


def test_cpu_only_llama_cpp_on_a_gpu_machine_says_how_to_rebuild():
    facts = system.facts(system.model_cache_dir())
    found = llamacpp.LlamaFacts(installed=True, version="0.3.36",
                                system_info=SYSTEM_INFOS["cpu-avx2"][0])
    # Without nvcc: the word on the toolkit, and no install (the plan keeps the CPU build).
    section = llamacpp.section(found, facts, ONE_GPU, PLAN)
    [check] = section.checks
    assert check.status == "warn" and "nvcc" in (check.fix or "")
    assert "-DGGML_CUDA=on" in (check.fix or "") and not section.facts["needs_install"]
    # With a toolkit the driver runs: the plan's CUDA build, pinned, with this venv's python.
    with_nvcc = install_plan.build(replace(PLAN.machine, nvcc="12.4"))
    section = llamacpp.section(found, facts, ONE_GPU, with_nvcc)
    fix = section.checks[0].fix or ""
    assert "CMAKE_ARGS=-DGGML_CUDA=on " in fix and "llama-cpp-python==0.3.36" in fix
    assert f"{sys.executable} -m pip" in fix and section.facts["needs_install"]
    cuda = llamacpp.LlamaFacts(installed=True, version="0.3.36",
                               system_info=SYSTEM_INFOS["cuda"][0])
    assert llamacpp.section(cuda, facts, ONE_GPU, with_nvcc).checks[0].status == "ok"


def test_simd_from_cpuinfo():
    x86 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx f16c fma avx2 avx512f avx512_bf16\n"
    assert system.simd_features(x86, "x86_64") == ["AVX", "AVX2", "FMA", "F16C", "AVX512F",
                                                    "AVX512_BF16"]
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"
    assert system.simd_features(arm, "aarch64") == ["NEON"]
    old = "flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2\n"
    assert system.simd_features(old, "x86_64") == []


def test_system_facts_of_this_machine(tmp_path):
    facts = system.facts(tmp_path / "not-yet-created")
    assert facts.cores >= 1 and facts.python.startswith("3.")
    assert facts.ram_total and facts.ram_available and 0 < facts.ram_available <= facts.ram_total
    assert facts.home_disk_free and facts.home_disk_free > 0  # measured on the parent
    statuses = {c.id: c.status for c in system.section(facts).checks}
    assert set(statuses) == {"system.os", "system.python", "system.cpu", "system.ram",
                             "system.disk"}
    assert statuses["system.python"] == "ok"


def test_package_versions_against_the_requirements():
    found = {s.name.lower(): s for s in versions.states()}
    assert {"transformers", "accelerate"} <= set(found)
    missing = versions.PackageState("transformers", ">=4.40", None, optional=True)
    assert versions.judge(missing).status == "warn"
    old = versions.PackageState("transformers", ">=4.40", "4.28.1", optional=True)
    check = versions.judge(old)
    assert check.status == "fail"
    assert check.fix == f"{sys.executable} -m pip install 'transformers>=4.40'"
    assert versions.judge(versions.PackageState("fastapi", ">=0.115", "0.120.0", False)).status \
        == "ok"
