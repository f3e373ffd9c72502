"""The one settings object.

Every field is a setting with three spellings: the field here (its default and
description), an environment variable ``STARCHART_<NAME>`` and a CLI flag
``--<name-with-dashes>`` (built from this class by ``cli.py``). Flags override
the environment, which overrides the defaults.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL = "smollm2-135m-instruct"

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2,
               "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "kib": 1024,
               "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def parse_size(text: str) -> int:
    """``8GB``, ``512MiB``, ``1.5g`` or a number of bytes -> bytes (GB = 1000^3, GiB = 1024^3)."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size such as 8GB, 512MB or 2GiB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_duration(text: str) -> float:
    """Ollama-style durations: ``5m``, ``30s``, ``1h30m``, ``250ms``, or seconds (``90``)."""
    text = text.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration such as 5m, 30s, 1h or 250ms")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("starchart", appauthor=False))


# Settings kept as the user wrote them and parsed by a property: checked at start-up.
_PARSED_LATER: dict[str, Callable[[str], object]] = {
    "keep_alive": parse_duration, "memory_budget": parse_size}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STARCHART_", extra="ignore")

    home: Path = Field(
        default_factory=_default_home,
        description="Data directory (database, keys, logs).",
    )
    model: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [DEFAULT_MODEL],
        description="Chat model: a registry name (see `starchart models`) or a path to a .gguf;"
        " with --engine transformers also a checkpoint folder or a Hugging Face hub id."
        " Repeat it (or comma-separate it in the env var) to serve several models; NAME=PATH"
        " serves PATH under NAME. The first is the default for requests that name none.",
    )
    # Several models in one server (README "Several models").
    load_on_demand: bool = Field(
        False,
        description="Load no model at start-up: each loads on its first request (which waits"
        " for it, up to --load-timeout) or on POST /v1/models/NAME/load.",
    )
    keep_alive: str | None = Field(
        None,
        description="Unload a model idle this long (5m, 30s, 1h; like Ollama's keep_alive); it"
        " loads again on its next request. Default: models stay loaded.",
    )
    memory_budget: str | None = Field(
        None,
        description="Memory the loaded models may take together (8GB, 512MB, 2GiB), by the"
        " planner's estimate (weights + KV cache x --parallel); loading beyond it unloads the"
        " least recently used idle model. Default: the free RAM (VRAM with GPU offload) at"
        " start-up, as `starchart doctor` sees it; no limit with a single model.",
    )
    load_timeout: float = Field(
        300.0, gt=0,
        description="Seconds a request waits for its model to load (--load-on-demand,"
        " --keep-alive) before it gets 503.",
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

    # llama.cpp GPU offload (needs a CUDA/Metal build of llama-cpp-python; `starchart plan`
    # prints the values for a model and this machine's GPUs).
    n_gpu_layers: int = Field(
        0, ge=-1, description="llamacpp engine: layers offloaded to the GPU(s) (-1 = all,"
        " 0 = CPU only).",
    )
    tensor_split: str | None = Field(
        None, pattern=r"^\d+(\.\d+)?(,\d+(\.\d+)?)*$",
        description="llamacpp engine: share of the offloaded layers per GPU, comma-separated"
        " (e.g. 32,15 puts about twice as many on GPU 0 as on GPU 1); default: by free memory.",
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

    # CLIP (image-text): off unless --clip names a model.
    clip: str | None = Field(
        None,
        description="CLIP model served beside the chat model: a local folder or a Hugging Face"
        " hub id already in the local cache (e.g. openai/clip-vit-base-patch32). Default: none.",
    )
    clip_device: str | None = Field(
        None, description="Device for CLIP: cpu, cuda, cuda:1, ... (default: cuda when"
        " available, else cpu).",
    )
    clip_max_batch: int = Field(
        32, ge=1, description="Most images (or texts) one CLIP forward pass gathers."
    )
    clip_max_wait_ms: float = Field(
        50.0, ge=0, description="Longest a CLIP batch waits for images or texts that"
        " concurrent requests are still reading or decoding (ms); a lone request never waits.",
    )
    clip_max_labels: int = Field(
        256, ge=1, description="Most labels (classify) or texts (similarity, embeddings)"
        " in one request.",
    )
    clip_max_images: int = Field(64, ge=1, description="Most images in one CLIP request.")
    clip_max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest image accepted, in pixels (width x height):"
        " guards against decompression bombs (sets Pillow's MAX_IMAGE_PIXELS).",
    )

    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest accepted request body in bytes."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the conversation and key store (default: SQLite file"
        " starchart.db in the data directory), e.g. postgresql+psycopg://user@host/db.",
    )
    allowed_hosts: str = Field(
        "",
        description="Extra names the server may be reached by (comma-separated Host header"
        " values, '*' for any); loopback names and the bound address are always allowed.",
    )
    cors_origins: str = Field(
        "",
        description="Origins allowed to call the API from a browser (comma-separated,"
        " e.g. http://localhost:5173); empty = CORS off.",
    )
    insecure_no_auth: bool = Field(
        False,
        description="Serve on a non-loopback address without API keys (anyone who can reach"
        " the port can use it).",
    )
    rate_limit_requests: int = Field(
        0, ge=0, description="Requests per minute one API key may make (POSTs under /v1/,"
        " the ones that do work; without keys: per client address); past it 429. 0 = off.",
    )
    rate_limit_tokens: int = Field(
        0, ge=0, description="Tokens (prompt + completion) per minute one API key may use;"
        " once used up, 429 until the minute rolls on. 0 = off.",
    )
    send_timeout: float = Field(
        30.0, gt=0, description="Seconds a client may leave an answer unread (the send"
        " buffer full) before its connection is dropped and its generation stopped.",
    )
    shutdown_timeout: float = Field(
        20.0, gt=0,
        description="Seconds a SIGTERM leaves requests in flight to finish: new requests get"
        " 503 at once, streams still running near the deadline end with an error event.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Server log level."
    )

    metrics_open: bool = Field(
        False, description="Serve GET /metrics (Prometheus) without an API key even when keys"
        " exist (for a scraper on a trusted network).",
    )

    # starchart bench (the client side; not a server setting).
    bench_timeout: float = Field(
        120.0, gt=0, description="starchart bench: longest one request may take, in seconds,"
        " before it counts as a timeout error.",
    )

    # llama.cpp continuous batching (README "Continuous batching").
    parallel: int = Field(
        8, ge=1, le=64,
        description="llama.cpp engine: sequences decoded together in one batch (each keeps"
        " its own n_ctx of KV cache). 8 measured best on a 2-core CPU.",
    )
    max_queue: int = Field(
        64, ge=0,
        description="llama.cpp engine: requests that may wait beyond the --parallel running"
        " ones; past it a request gets 429 with Retry-After.",
    )
    prefill_chunk: int = Field(
        128, ge=1,
        description="llama.cpp engine: most prompt tokens read per decode step while other"
        " sequences generate (bounds how long a long prompt stalls running streams).",
    )

    # The remote engine: models served by upstream OpenAI-compatible servers
    # (vLLM, SGLang, TGI, llama.cpp's server, another starchart), passed through.
    upstream: list[str] = Field(
        default_factory=list,
        description="Serve model NAME from upstream OpenAI-compatible servers: NAME=URL[,URL...]"
        " (repeatable; URLs are base URLs such as http://gpu1:8000, load-balanced).",
    )
    upstream_key: str | None = Field(
        None, description="API key sent to the --upstream servers (Authorization: Bearer)."
    )
    upstream_model: list[str] = Field(
        default_factory=list,
        description="NAME=MODEL: the name the upstreams of NAME know the model by"
        " (repeatable; default: NAME).",
    )
    models_file: Path | None = Field(
        None,
        description="A models.toml naming upstream models: [models.NAME] with urls = [...],"
        " and optionally upstream_model and api_key (see README).",
    )
    upstream_balance: Literal["least-outstanding", "round-robin"] = Field(
        "least-outstanding",
        description="How requests spread over a model's healthy upstreams.",
    )
    upstream_connect_timeout: float = Field(
        5.0, gt=0, description="Seconds to connect to an upstream before trying the next."
    )
    upstream_first_token_timeout: float = Field(
        300.0, gt=0,
        description="Seconds an upstream may take to its first token (to the whole answer when"
        " not streaming) before the request fails with 504.",
    )
    upstream_idle_timeout: float = Field(
        60.0, gt=0,
        description="Seconds a streaming upstream may go silent before the stream ends with an"
        " error event.",
    )
    upstream_health_interval: float = Field(
        5.0, gt=0, description="Seconds between health probes (GET /v1/models) of upstreams."
    )

    @field_validator("model", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        """``STARCHART_MODEL=a,b`` and ``Settings(model="a")`` as well as a list."""
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and not value:
            raise ValueError("name at least one model")
        return value

    @field_validator(*_PARSED_LATER)
    @classmethod
    def _parses(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A duration or size the properties below could not parse is refused at start-up."""
        if value is not None and info.field_name is not None:
            _PARSED_LATER[info.field_name](value)
        return value

    @property
    def default_model(self) -> str:
        """The first ``--model``: the one requests without a ``model`` get."""
        return self.model[0]

    @property
    def keep_alive_seconds(self) -> float | None:
        return None if self.keep_alive is None else parse_duration(self.keep_alive)

    @property
    def memory_budget_bytes(self) -> int | None:
        return None if self.memory_budget is None else parse_size(self.memory_budget)

