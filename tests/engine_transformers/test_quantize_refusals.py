"""`--quantize` where it cannot work is an error that says what can: on the llama.cpp
engine (the default), and on a GPU box whose torch cannot see the GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "doctor"))
from fake_smi import write_fake_nvidia_smi


def starchart(*args: str, home: Path, path: str | None = None
              ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STARCHART_HOME": str(home)}
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "starchart", *args], capture_output=True,
                          text=True, timeout=180, env=env, check=False,
                          stdin=subprocess.DEVNULL)


def test_quantize_on_llama_cpp_names_the_engine_that_can(tmp_path: Path) -> None:
    done = starchart("chat", "-p", "hi", "--quantize", "8bit", home=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("starchart: --quantize 8bit works on the transformers engine"
                                  " only")
    assert "--engine transformers" in done.stderr and "Q8_0" in done.stderr


def test_quantize_on_a_gpu_box_whose_torch_is_cpu_only_names_the_torch_fix(
        tiny_folder: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here: the refusal does not apply")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_fake_nvidia_smi(bin_dir, "470.82.01-1xT4", knows_compute_cap=False)
    done = starchart("chat", "-p", "hi", "--engine", "transformers", "--model",
                     str(tiny_folder), "--quantize", "8bit", home=tmp_path,
                     path=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert done.returncode == 1, done.stderr
    assert "needs PyTorch to use this machine's NVIDIA GPU" in done.stderr
    assert (f"`{sys.executable} -m pip install torch==2.7.1+cu118 --index-url"
            " https://download.pytorch.org/whl/cu118`") in done.stderr
    assert "starchart doctor --fix" in done.stderr and "Traceback" not in done.stderr


def test_real_8bit_load_of_the_tiny_model(tiny_folder: Path) -> None:
    """On a machine with an NVIDIA GPU and bitsandbytes: load and answer in 8-bit."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch here: the real 8-bit load runs on GPU"
                    " machines only")
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    from starchart.engines.transformers import TransformersEngine

    engine = TransformersEngine(str(tiny_folder), n_ctx=256, chat_template="starchat",
                                quantize="8bit")
    engine.load()
    try:
        assert engine.info.quantization == "bitsandbytes-int8"
        assert engine.tokenize("hello")
    finally:
        engine.close()
