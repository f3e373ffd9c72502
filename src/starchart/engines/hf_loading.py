"""Where a transformers model comes from, and how it is placed in memory.

``--model`` may be a registry name (the embedded SmolLM2 GGUF), a local
checkpoint folder, a ``.gguf`` file (de-quantized by transformers through
``gguf_file=``) or a Hugging Face hub id, downloaded once into the standard HF
cache with a progress bar. Device and dtype are picked for the machine;
``--quantize`` goes through bitsandbytes, which only runs on CUDA: everything
that can't work is refused with one paragraph that says why and what to do.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from starchart.errors import NotFound, StarchartError, Unavailable
from starchart.registry import is_hub_id, resolve

log = logging.getLogger("starchart.transformers")

# What a checkpoint needs; skips other formats a repo may also carry (GGUF, ONNX, ...).
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Source:
    """What to hand ``from_pretrained``: a folder, plus the file name for a GGUF."""

    model_id: str
    folder: Path
    gguf_file: str | None = None


def locate(name: str, *, trust_remote_code: bool = False, home: Path | None = None) -> Source:
    """Model name, .gguf file, checkpoint folder, or hub id (downloaded)."""
    try:
        spec = resolve(name, home)
    except NotFound:
        if not is_hub_id(name):
            raise
        return Source(name, download(name, trust_remote_code=trust_remote_code))
    if spec.path.is_file():
        if not spec.is_gguf:
            raise NotFound(f"{spec.path} is a file but not a .gguf: give a checkpoint folder,"
                           " a .gguf file or a hub id", param="model", code="model_not_found")
        return Source(spec.id, spec.path.parent, spec.path.name)
    if not (spec.path / "config.json").is_file():
        raise NotFound(f"{spec.path} has no config.json: not a transformers checkpoint folder",
                       param="model", code="model_not_found")
    return Source(spec.id, spec.path)


def download(repo_id: str, *, trust_remote_code: bool = False) -> Path:
    """The hub checkpoint's folder in the HF cache, downloading what is missing."""
    from huggingface_hub import snapshot_download

    patterns = _HUB_FILES if trust_remote_code else [p for p in _HUB_FILES if p != "*.py"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:  # noqa: BLE001 - not (fully) cached: fetch it below
        pass
    log.info("downloading %s from the Hugging Face hub into the HF cache", repo_id)
    try:
        # huggingface_hub draws its own tqdm progress bars, one per file.
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # noqa: BLE001 - every failure gets the same advice
        raise NotFound(_download_advice(repo_id, exc), param="model",
                       code="model_not_found") from None


def _download_advice(repo_id: str, exc: Exception) -> str:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(exc, GatedRepoError):
        why = (f"{repo_id!r} is gated on the Hugging Face hub: accept its licence on the"
               " model page, then log in with `hf auth login` (or set HF_TOKEN).")
    elif isinstance(exc, RepositoryNotFoundError):
        why = (f"there is no model {repo_id!r} on the Hugging Face hub (or it is private:"
               " log in with `hf auth login`). Check the spelling, or give a local path.")
    else:
        why = (f"could not download {repo_id!r} from the Hugging Face hub and it is not in"
               f" the local HF cache ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})."
               " This machine may be offline (HF_HUB_OFFLINE=1 also forbids downloads).")
    return (f"{why} To fetch it on a machine with internet access: `hf download {repo_id}`"
            " (it lands in the HF cache, ~/.cache/huggingface; copy that folder here or"
            " point HF_HOME at it), or download the checkpoint folder and pass"
            " --model /path/to/folder.")


def choose_device(requested: str = "auto") -> str:
    if requested != "auto":
        if requested == "cuda" and not torch.cuda.is_available():
            raise Unavailable("--device cuda: PyTorch sees no CUDA device here (is this the CPU"
                              " build of torch, or is the NVIDIA driver missing? `starchart"
                              " doctor` checks); use --device cpu")
        if requested == "mps" and not torch.backends.mps.is_available():
            raise Unavailable("--device mps: Apple's Metal backend is not available here;"
                              " use --device cpu")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def multiple_gpus() -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 1


def choose_dtype(device: str, requested: str = "auto") -> torch.dtype:
    """bf16 on CUDA where the GPU has it, else fp16; fp16 on mps; fp32 on CPU."""
    if requested != "auto":
        return DTYPES[requested]
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def quantization_config(mode: str, compute_dtype: torch.dtype) -> Any:
    """The ``BitsAndBytesConfig`` for ``--quantize`` (None for "none")."""
    from transformers import BitsAndBytesConfig

    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if mode == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype)
    return None


class QuantizationUnavailable(Unavailable):
    code = "quantization_unavailable"


def check_quantization(mode: str, device: str) -> None:
    """Refuse ``--quantize`` where bitsandbytes can't run, before any weights load."""
    if mode == "none":
        return
    on_cpu = ("On CPU, the way to run a model in 8 or 4 bits is a GGUF file on the llama.cpp"
              " engine: `starchart serve --engine llamacpp --model model-Q8_0.gguf` (Q8_0 is"
              " the 8-bit one, Q4_K_M a good 4-bit one); or leave out --quantize to run"
              " this checkpoint unquantized.")
    if device != "cuda":
        if not torch.cuda.is_available() and (fix := _torch_gpu_fix()):
            raise QuantizationUnavailable(
                f"--quantize {mode} needs PyTorch to use this machine's NVIDIA GPU, and the"
                f" installed torch {torch.__version__} cannot ({fix[0]}). Install the build"
                f" that runs here: `{fix[1]}` (or run `starchart doctor --fix`), then start"
                " again.", param="quantize")
        found = "no CUDA device" if not torch.cuda.is_available() else f"--device {device}"
        raise QuantizationUnavailable(
            f"--quantize {mode} needs an NVIDIA GPU: bitsandbytes' {mode} weights only run"
            f" on CUDA, and here there is {found} (PyTorch {torch.__version__}). {on_cpu}",
            param="quantize")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise QuantizationUnavailable(
            f"--quantize {mode} needs the bitsandbytes package, which is not installed:"
            f" `{_bnb_install()}`, then start again. `starchart doctor` checks that its CUDA"
            " library loads.", param="quantize")
    try:
        import bitsandbytes  # noqa: F401 - importing loads its native CUDA library
    except Exception as exc:  # noqa: BLE001 - any failure here means the library is unusable
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise QuantizationUnavailable(
            f"--quantize {mode}: bitsandbytes is installed but its native library failed to"
            f" load ({first}). Usually its build does not match the CUDA version of PyTorch"
            f" (torch.version.cuda = {torch.version.cuda}): install the matching release with"
            f" `{_bnb_install()}`, or run without --quantize.",
            param="quantize") from None


def _bnb_install() -> str:
    """The install plan's bitsandbytes line for this torch's CUDA build."""
    import shlex
    import sys

    from starchart.doctor import compat

    row = compat.recommend_bnb(torch.version.cuda, torch.__version__)
    if row is None:
        why = "this torch has no CUDA build" if torch.version.cuda is None else \
            f"no bitsandbytes release in its table ships a library for CUDA {torch.version.cuda}"
        return f"starchart doctor --fix ({why})"
    return shlex.join([sys.executable, "-m", "pip", "install", f"bitsandbytes=={row.bnb}"])


def _torch_gpu_fix() -> tuple[str, str] | None:
    """(why torch cannot see the GPU, the install line) when this box has an NVIDIA GPU."""
    from starchart.doctor import nvidia
    from starchart.doctor.pytorch import default_plan, torch_fix

    gpus = nvidia.probe()
    if not gpus.gpus:
        return None
    plan = default_plan(gpus)
    build = torch.version.cuda
    why = (f"a CPU-only build, driver {gpus.driver_version}" if build is None else
           f"built for CUDA {build}, driver {gpus.driver_version} supports up to"
           f" {gpus.cuda_version}")
    return why, torch_fix(plan)


def load_failure(what: str, exc: Exception) -> StarchartError:
    """A load error as one readable line, never a traceback."""
    first = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ""
    return Unavailable(f"transformers could not load {what}: {type(exc).__name__}: {first}")
