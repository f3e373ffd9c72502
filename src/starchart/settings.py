"""The one settings object.

Every field is a setting with three spellings: the field here (its default and
description), an environment variable ``STARCHART_<NAME>`` and a CLI flag
``--<name-with-dashes>`` (built from this class by ``cli.py``). Flags override
the environment, which overrides the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "smollm2-135m-instruct"


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("starchart", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STARCHART_", extra="ignore")

    home: Path = Field(
        default_factory=_default_home,
        description="Data directory (database, keys, logs).",
    )
    model: str = Field(
        DEFAULT_MODEL,
        description="Chat model: a registry name (see `starchart models`) or a path to a .gguf;"
        " with --engine transformers also a checkpoint folder or a Hugging Face hub id.",
    )
    engine: Literal["llamacpp", "transformers"] = Field(
        "llamacpp",
        description="Inference engine: llamacpp (GGUF) or transformers (HF checkpoints, hub ids,"
        " GGUF through transformers).",
    )
    host: str = Field("127.0.0.1", description="Address the server binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port the server listens on.")
    n_ctx: int = Field(4096, ge=64, description="Context window in tokens.")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for generation (default: all cores)."
    )

    # The transformers engine (ignored by llamacpp).
    device: Literal["auto", "cuda", "mps", "cpu"] = Field(
        "auto", description="transformers engine: device (auto = CUDA, else Apple mps, else CPU)."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="transformers engine: weight dtype (auto = bf16 on CUDA where supported,"
        " else fp16; fp16 on mps; fp32 on CPU).",
    )
    quantize: Literal["none", "8bit", "4bit"] = Field(
        "none",
        description="transformers engine: bitsandbytes quantization (8bit, or 4bit nf4 with"
        " double quantization); needs CUDA.",
    )
    chat_template: str | None = Field(
        None,
        description="transformers engine: chat template, a name (starchat, chatml, llama2,"
        " zephyr) or a .jinja file; replaces the tokenizer's own (default: the tokenizer's,"
        " else the one its special tokens give away).",
    )
    trust_remote_code: bool = Field(
        False,
        description="transformers engine: run the Python code a hub model ships (only for"
        " models you trust).",
    )

    # Generation defaults: the values of the user's document, overridable per request.
    temperature: float = Field(0.2, ge=0, le=2, description="Default sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Default nucleus sampling mass.")
    top_k: int = Field(50, ge=0, description="Default top-k (0 = off).")
    min_p: float = Field(0.0, ge=0, le=1, description="Default min-p (0 = off).")
    max_tokens: int = Field(1024, ge=1, description="Default maximum new tokens.")
    repetition_penalty: float = Field(
        1.2, gt=0, description="Default repetition penalty (1 = off)."
    )
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="Default presence penalty.")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="Default frequency penalty.")
    system_prompt: str = Field(
        "",
        description=(
            "System prompt added when a chat has none. Empty by default: measured on the"
            " embedded model, an empty system message answers best (see README)."
        ),
    )

    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest accepted request body in bytes."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Server log level."
    )
