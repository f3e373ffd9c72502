"""Where models come from, device/dtype choice, quantization refusals, and the
clear errors the command line prints for them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from starchart.engines.hf_loading import (
    QuantizationUnavailable,
    check_quantization,
    choose_device,
    choose_dtype,
    locate,
    quantization_config,
)
from starchart.engines.transformers import TransformersEngine
from starchart.errors import NotFound, Unavailable
from starchart.registry import EMBEDDED_NAME, embedded_gguf

SRC = str(Path(__file__).resolve().parents[2] / "src")
NO_CUDA = not torch.cuda.is_available()


def starchart(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "starchart", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": SRC, **(env or {})}, stdin=subprocess.DEVNULL)


def test_bitsandbytes_config_for_8bit() -> None:
    config = quantization_config("8bit", torch.float16)
    assert config.quant_method == "bitsandbytes"
    assert config.load_in_8bit is True
    assert config.load_in_4bit is False


def test_bitsandbytes_config_for_4bit_is_nf4_with_double_quantization() -> None:
    config = quantization_config("4bit", torch.bfloat16)
    assert config.quant_method == "bitsandbytes"
    assert config.load_in_4bit is True
    assert config.load_in_8bit is False
    assert config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant is True
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config("none", torch.float32) is None


@pytest.mark.skipif(not NO_CUDA, reason="checks the CPU-only refusal")
@pytest.mark.parametrize("mode", ["8bit", "4bit"])
def test_quantize_without_cuda_explains_and_points_to_gguf(mode: str) -> None:
    with pytest.raises(QuantizationUnavailable) as info:
        check_quantization(mode, "cpu")
    message = info.value.message
    assert f"--quantize {mode} needs an NVIDIA GPU" in message
    assert "no CUDA device" in message
    assert "GGUF" in message and "--engine llamacpp" in message
    assert info.value.param == "quantize"
    assert "\n" not in message  # one paragraph


def test_quantize_without_bitsandbytes_says_how_to_install_it() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("bitsandbytes is installed here")
    with pytest.raises(QuantizationUnavailable) as info:
        check_quantization("8bit", "cuda")
    message = info.value.message
    if torch.version.cuda:  # the pinned release for this torch's CUDA, this venv's pip
        assert f"{sys.executable} -m pip install bitsandbytes==" in message
    else:
        assert "starchart doctor --fix (this torch has no CUDA build)" in message


@pytest.mark.skipif(not NO_CUDA, reason="checks the CPU-only refusal")
def test_the_engine_refuses_quantize_before_loading_anything() -> None:
    with pytest.raises(QuantizationUnavailable):
        TransformersEngine(EMBEDDED_NAME, quantize="8bit")


@pytest.mark.skipif(not NO_CUDA, reason="checks the CPU-only refusal")
def test_serve_with_quantize_on_cpu_prints_the_error_not_a_traceback(tmp_path: Path) -> None:
    result = starchart("serve", "--engine", "transformers", "--quantize", "8bit",
                       "--port", "0", "--home", str(tmp_path))
    assert result.returncode == 1
    assert "--quantize 8bit needs an NVIDIA GPU" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_uncached_hub_id_offline_names_the_id_and_how_to_fetch_it(tmp_path: Path) -> None:
    result = starchart("chat", "-p", "hi", "--engine", "transformers", "--model",
                       "HuggingFaceH4/starchat-beta", "--home", str(tmp_path),
                       env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 1
    assert "'HuggingFaceH4/starchat-beta'" in result.stderr
    assert "hf download HuggingFaceH4/starchat-beta" in result.stderr
    assert "Traceback" not in result.stderr


def test_device_and_dtype_defaults() -> None:
    assert choose_device("auto") == ("cuda" if torch.cuda.is_available() else
                                     "mps" if torch.backends.mps.is_available() else "cpu")
    assert choose_device("cpu") == "cpu"
    assert choose_dtype("cpu") == torch.float32
    assert choose_dtype("mps") == torch.float16
    assert choose_dtype("cpu", "bfloat16") == torch.bfloat16
    if torch.cuda.is_available():
        expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        assert choose_dtype("cuda") == expected


@pytest.mark.skipif(not NO_CUDA, reason="checks the no-GPU refusal")
def test_asking_for_cuda_without_one_is_refused() -> None:
    with pytest.raises(Unavailable) as info:
        choose_device("cuda")
    assert "--device cpu" in info.value.message


def test_locate_a_gguf_a_folder_and_refuse_the_rest(tmp_path: Path, tiny_folder: Path) -> None:
    gguf = locate(EMBEDDED_NAME)
    assert gguf.gguf_file == embedded_gguf().name and gguf.folder == embedded_gguf().parent
    folder = locate(str(tiny_folder))
    assert folder.folder == tiny_folder and folder.gguf_file is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFound, match=r"no config\.json"):
        locate(str(tmp_path / "empty"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(NotFound, match=r"not a \.gguf"):
        locate(str(tmp_path / "notes.txt"))


def test_trust_remote_code_is_off_by_default_and_warns_when_on(
        tiny_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert TransformersEngine(str(tiny_folder)).trust_remote_code is False
    engine = TransformersEngine(str(tiny_folder), n_ctx=64, chat_template="chatml",
                                trust_remote_code=True)
    with caplog.at_level(logging.WARNING, logger="starchart.transformers"):
        engine.load()
    engine.close()
    assert any("--trust-remote-code" in r.getMessage() for r in caplog.records)
