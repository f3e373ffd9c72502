"""The memory planner: will this model fit here, at which precision, with which flags?

The model's shape comes from its files without loading weights: a GGUF's
metadata and tensor table, or a checkpoint's ``config.json`` plus its
safetensors headers (exact parameter count), or ``config.json`` alone (the
count estimated from the architecture's layer shapes).

Memory per option = weights + KV cache + runtime overhead:

* weights: fp32 4 bytes/parameter, fp16/bf16 2; int8 (bitsandbytes LLM.int8)
  1 byte for the linear layers' weights and 2 for the rest (embeddings, the
  output head, norms, biases stay 16-bit); int4 (bitsandbytes NF4 with double
  quantization) ~0.516 bytes for the linear weights; a GGUF its tensors' own
  bytes.
* KV cache: 2 (K and V) x layers x KV heads x head dim x context x batch x
  2 bytes (fp16; fp32 for the fp32 option). Grouped-query and multi-query
  attention (fewer KV heads) shrink it.
* overhead, an estimate: the CUDA context (0.5 GB; 0.3 GB for llama.cpp) or
  0.2 GB on the CPU for transformers, 5% of the weights for allocator slack, and the
  activations of one full-context prefill (context x batch x (4 x hidden +
  2 x intermediate) values); llama.cpp computes in 512-token chunks with
  fp32 logits for the chunk and f16 attention scores of the chunk against
  the context (``benchmarks/bench_planner.py`` compares this with the
  buffers llama.cpp reports).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from starchart.doctor import gguf
from starchart.doctor.nvidia import GpuProbe
from starchart.doctor.report import Check, fail, ok, warn
from starchart.doctor.safetensors_header import read_checkpoint
from starchart.doctor.units import GB, gb
from starchart.errors import BadRequest, NotFound

# 4 bits, plus NF4's per-64 block absmax, itself quantized to 8 bits (double
# quantization) with an fp32 scale per 256 blocks.
NF4_BYTES = 0.5 + (1 + 4 / 256) / 64
LLAMACPP_UBATCH = 512

# Tensors that stay 16-bit under bitsandbytes quantization: embeddings, the
# output head, and anything that is not a matrix (norms, biases).
_NOT_LINEAR = re.compile(r"(embed|wte|wpe|word_embeddings|position_embeddings|lm_head"
                         r"|^token_embd\.|^output\.weight$|rotary|rope)")
_GATED = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
          "phi3", "olmo", "olmo2", "granite", "cohere", "smollm3"}
_BIASED = {"gpt_bigcode", "gpt2", "gpt_neox", "gptj", "phi", "starcoder2", "opt", "bloom"}
_LEARNED_POSITIONS = {"gpt_bigcode", "gpt2", "opt"}
_UNTIED = {"llama", "mistral", "mixtral"}  # their configs default tie_word_embeddings to False


def _is_linear(name: str, ndim: int) -> bool:
    return ndim >= 2 and not _NOT_LINEAR.search(name)


@dataclass
class ModelShape:
    name: str
    path: str
    source: Literal["gguf", "safetensors", "config"]
    architecture: str
    n_params: int
    linear_params: int
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_ctx: int | None = None
    gguf_quant: str | None = None
    gguf_weight_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _first(config: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default


def shape_from_config(config: dict[str, Any], *, name: str, path: str) -> ModelShape:
    """The shape, with the parameter count estimated from the architecture."""
    kind = str(config.get("model_type", "unknown"))
    try:
        layers = int(_first(config, "num_hidden_layers", "n_layer", "num_layers"))
        hidden = int(_first(config, "hidden_size", "n_embd", "d_model"))
        heads = int(_first(config, "num_attention_heads", "n_head", "num_heads"))
        vocab = int(config["vocab_size"])
    except (TypeError, KeyError, ValueError) as exc:
        raise BadRequest(f"config.json of {name} lacks the layer count, hidden size, head"
                         f" count or vocab size ({exc})", param="model") from exc
    if config.get("multi_query"):
        kv_heads = 1
    else:
        kv_heads = int(_first(config, "num_key_value_heads", "num_kv_heads", default=heads))
    head_dim = int(_first(config, "head_dim", default=hidden // heads))
    intermediate = int(_first(config, "intermediate_size", "n_inner", "ffn_dim",
                              default=4 * hidden))
    gated = kind in _GATED or config.get("hidden_act") in ("silu", "swiglu")
    biased = kind in _BIASED or bool(config.get("attention_bias") or config.get("bias"))
    tied = bool(config.get("tie_word_embeddings", kind not in _UNTIED))
    positions = int(_first(config, "n_positions", "max_position_embeddings", default=0))

    q = o = hidden * heads * head_dim
    kv = 2 * hidden * kv_heads * head_dim
    # Mixture of experts: every expert's MLP is in memory, plus the router.
    experts = int(_first(config, "num_local_experts", "num_experts", default=1))
    mlp = experts * (3 if gated else 2) * hidden * intermediate
    if experts > 1:
        mlp += hidden * experts
    linear = layers * (q + kv + o + mlp)
    biases = (heads * head_dim + 2 * kv_heads * head_dim + hidden + intermediate + hidden
              if biased else 0)
    norm = (2 if biased else 1) * hidden  # LayerNorm has a bias, RMSNorm does not
    other = layers * (biases + 2 * norm) + norm + vocab * hidden * (1 if tied else 2)
    if kind in _LEARNED_POSITIONS:
        other += positions * hidden
    return ModelShape(
        name=name, path=path, source="config", architecture=kind,
        n_params=linear + other, linear_params=linear, n_layers=layers, hidden=hidden,
        n_heads=heads, n_kv_heads=kv_heads, head_dim=head_dim, intermediate=intermediate,
        vocab=vocab, max_ctx=_first(config, "max_position_embeddings", "n_positions",
                                    "seq_length"),
    )


def shape_from_checkpoint(folder: Path, *, name: str) -> ModelShape:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise BadRequest(f"{folder} has no config.json: the planner reads the model's shape"
                         " from it", param="model")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadRequest(f"cannot read {config_path}: {exc}", param="model") from exc
    shape = shape_from_config(config, name=name, path=str(folder))
    tensors = read_checkpoint(folder)
    if tensors:
        shape.source = "safetensors"
        shape.n_params = sum(t.elements for t in tensors)
        shape.linear_params = sum(t.elements for t in tensors if _is_linear(t.name, len(t.shape)))
    return shape


def shape_from_gguf(path: Path, *, name: str) -> ModelShape:
    f = gguf.read(path)
    heads = int(f.arch_value("attention.head_count") or 1)
    hidden = int(f.arch_value("embedding_length") or 0)
    vocab = f.arch_value("vocab_size") or f.array_lengths.get("tokenizer.ggml.tokens", 0)
    return ModelShape(
        name=name, path=str(path), source="gguf", architecture=f.architecture,
        n_params=f.n_params,
        linear_params=sum(t.elements for t in f.tensors if _is_linear(t.name, len(t.shape))),
        n_layers=int(f.arch_value("block_count") or 0), hidden=hidden, n_heads=heads,
        n_kv_heads=int(f.arch_value("attention.head_count_kv") or heads),
        head_dim=int(f.arch_value("attention.key_length") or hidden // heads),
        intermediate=int(f.arch_value("feed_forward_length") or 4 * hidden),
        vocab=int(vocab), max_ctx=f.arch_value("context_length"),
        gguf_quant=f.file_type, gguf_weight_bytes=f.weight_bytes,
    )


def _cached_config(repo_id: str) -> Path | None:
    """A hub id whose config.json is already in the local HF cache -> that snapshot folder."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def fetch_command(repo_id: str) -> str:
    return f"hf download {repo_id} config.json"


def _unreachable(repo_id: str, exc: Exception) -> NotFound:
    return NotFound(
        f"no local model {repo_id!r} and the Hugging Face hub is not reachable"
        f" ({type(exc).__name__}). The planner needs only its config.json: fetch that one"
        f" file on a machine with internet with `{fetch_command(repo_id)}` (it lands in the"
        " HF cache, ~/.cache/huggingface; copy that here or point HF_HOME at it), then"
        " plan again", param="model", code="model_not_found")


def shape_from_hub(repo_id: str) -> ModelShape:
    """Only config.json (into the HF cache) and the safetensors headers (HTTP range
    requests, no weights) through huggingface_hub; offline, the command to fetch it."""
    from huggingface_hub import get_safetensors_metadata, hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
    )

    # httpx logs every request at INFO, huggingface_hub every retry: the planner's
    # output is the table, or one line saying what to do.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)

    try:
        config_path = Path(hf_hub_download(repo_id, "config.json"))
    except GatedRepoError:
        raise NotFound(f"{repo_id!r} is gated on the Hugging Face hub: accept its licence on"
                       " the model page and log in (`hf auth login`), then plan again",
                       param="model", code="model_not_found") from None
    except (RepositoryNotFoundError, HfHubHTTPError) as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(exc, RepositoryNotFoundError) or status in (401, 404):
            raise NotFound(f"no model {repo_id!r} on the Hugging Face hub (or it is private:"
                           " log in with `hf auth login`)", param="model",
                           code="model_not_found") from None
        raise _unreachable(repo_id, exc) from None
    except Exception as exc:  # noqa: BLE001 - offline, DNS, proxy: all the same advice
        raise _unreachable(repo_id, exc) from None
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadRequest(f"cannot read {repo_id}'s config.json: {exc}", param="model") from exc
    shape = shape_from_config(config, name=repo_id, path=repo_id)
    try:
        meta = get_safetensors_metadata(repo_id)
    except Exception:  # noqa: BLE001 - no safetensors, or unreadable: config.json's estimate
        return shape
    tensors = [(name, info.shape) for file in meta.files_metadata.values()
               for name, info in file.tensors.items()]
    if tensors:
        shape.source = "safetensors"
        shape.n_params = sum(math.prod(s) for _, s in tensors)
        shape.linear_params = sum(math.prod(s) for n, s in tensors if _is_linear(n, len(s)))
    return shape


def load_shape(model: str, home: Path | None = None) -> ModelShape:
    """What the user typed after --model: a model name (``home``: where the names of
    ``starchart models`` are), a path, or a hub id (from the local HF cache, else its
    config.json and safetensors headers from the hub)."""
    from starchart.registry import is_hub_id, resolve

    try:
        path = resolve(model, home).path
    except NotFound:
        if not is_hub_id(model):
            raise NotFound(f"no local model {model!r}: give a .gguf, a folder with"
                           " config.json (and optionally its *.safetensors), or a Hugging"
                           " Face hub id", param="model", code="model_not_found") from None
        snapshot = _cached_config(model)
        if snapshot is None:
            return shape_from_hub(model)
        path = snapshot
    if path.is_file() and path.suffix.lower() == ".gguf":
        return shape_from_gguf(path, name=model)
    if path.is_file() and path.name == "config.json":
        path = path.parent
    if path.is_dir():
        return shape_from_checkpoint(path, name=model)
    raise BadRequest(f"{path} is neither a .gguf file nor a checkpoint folder", param="model")


# --- the plan --------------------------------------------------------------------

Device = Literal["gpu", "cpu"]


@dataclass(frozen=True)
class Readiness:
    """Whether the software can use the GPUs, and the one line that fixes it when not.
    None: not checked (assumed to work)."""

    torch_gpu: bool | None = None
    torch_fix: str = ""
    bnb: bool | None = None
    bnb_fix: str = ""
    llama_gpu: bool | None = None
    llama_fix: str = ""


@dataclass
class Option:
    name: str
    weights: int
    kv_cache: int
    overhead: int
    device: Device
    runnable: bool
    note: str = ""
    fits: bool = False
    command: str | None = None
    # What to fix first when the option would run here but the software can't yet.
    blocked_by: str | None = None

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


@dataclass
class Budget:
    device: Device
    free: int | None  # several GPUs: all of them together (the model is split)
    what: str
    gpus_free: list[int] = field(default_factory=list)  # per GPU, by index

    @property
    def split(self) -> bool:
        return len(self.gpus_free) > 1


@dataclass
class Plan:
    shape: ModelShape
    n_ctx: int
    batch: int
    budget: Budget
    options: list[Option] = field(default_factory=list)
    ranked: list[Option] = field(default_factory=list)  # best first
    best: Option | None = None

    def check(self) -> Check:
        where = f"{self.budget.what} ({gb(self.budget.free)} free)"
        title = f"Plan for {self.shape.name}"
        if self.best is not None:
            split = ""
            if self.budget.split and self.best.device == "gpu":
                how = ("--tensor-split" if self.shape.source == "gguf"
                       else "transformers device_map='auto'")
                split = f" split across {len(self.budget.gpus_free)} GPUs ({how})"
            return ok("plan", title, f"{self.best.name} fits{split}: ~{gb(self.best.total)} of"
                      f" {where}; run: {self.best.command}")
        waiting = [o for o in self.ranked if o.blocked_by and self.budget.free is not None
                   and o.total <= self.budget.free]
        if waiting:
            first = waiting[0]
            return fail("plan", title, f"{first.name} would fit (~{gb(first.total)} of {where}),"
                        f" but {first.note}: fix that first", first.blocked_by or "")
        runnable = [o for o in self.options if o.runnable]
        smallest = min(runnable, key=lambda o: o.total, default=None)
        need = f"; the smallest option ({smallest.name}) needs ~{gb(smallest.total)}" \
            if smallest else ""
        if self.budget.free is None:
            return warn("plan", title, f"free memory unknown{need}",
                        "check the numbers in the table against your memory by hand")
        return fail("plan", title, f"nothing fits in {where}{need}",
                    "use a smaller or more quantized model (a Q4 GGUF), a shorter --n-ctx, or"
                    " a machine with more memory")

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.shape.as_dict(), "n_ctx": self.n_ctx, "batch": self.batch,
            "budget": asdict(self.budget),
            "options": [o.as_dict() for o in self.options],
            "best": self.best.name if self.best else None,
            "command": self.best.command if self.best else None,
        }


def weight_bytes(shape: ModelShape, precision: str) -> int:
    other = shape.n_params - shape.linear_params
    if precision == "fp32":
        return 4 * shape.n_params
    if precision == "fp16/bf16":
        return 2 * shape.n_params
    if precision == "int8":
        return shape.linear_params + 2 * other
    if precision == "int4":
        return int(NF4_BYTES * shape.linear_params) + 2 * other
    raise ValueError(precision)


def kv_cache_bytes(shape: ModelShape, n_ctx: int, batch: int, dtype_bytes: int = 2) -> int:
    return 2 * shape.n_layers * shape.n_kv_heads * shape.head_dim * n_ctx * batch * dtype_bytes


def overhead_bytes(shape: ModelShape, weights: int, n_ctx: int, batch: int, *,
                   device: Device, engine: Literal["transformers", "llamacpp"],
                   act_bytes: int = 2) -> int:
    per_token = 4 * shape.hidden + 2 * shape.intermediate
    if engine == "llamacpp":
        tokens = min(n_ctx, LLAMACPP_UBATCH) * batch
        # fp32 logits and activations for one chunk, plus its f16 attention
        # scores against the whole context (what makes the buffer grow with n_ctx).
        compute = tokens * (4 * shape.vocab + 4 * per_token + 2 * shape.n_heads * n_ctx)
        # On the CPU llama.cpp's buffers are all there is (measured: see the benchmark).
        return (int(0.3 * GB) if device == "gpu" else 0) + compute
    base = int(0.5 * GB) if device == "gpu" else int(0.2 * GB)
    return base + weights // 20 + n_ctx * batch * per_token * act_bytes


def free_memory(gpus: GpuProbe, ram_available: int | None, *, use_gpu: bool = True) -> Budget:
    """Where models go and how much is free there: all GPUs together (a model is split
    across them), else RAM."""
    if gpus.gpus and use_gpu:
        frees = [g.memory_free for g in sorted(gpus.gpus, key=lambda g: g.index)]
        if len(frees) == 1:
            gpu = gpus.gpus[0]
            return Budget("gpu", gpu.memory_free, f"GPU {gpu.index} ({gpu.name})", frees)
        names = sorted({g.name for g in gpus.gpus})
        return Budget("gpu", sum(frees), f"{len(frees)} GPUs together ({', '.join(names)})",
                      frees)
    return Budget("cpu", ram_available, "RAM")


def tensor_split(gpus_free: list[int]) -> str:
    """llama.cpp's --tensor-split: each GPU's share, in whole GB of free memory."""
    return ",".join(str(max(1, round(free / GB))) for free in gpus_free)


def _torch_dtype(gpus: GpuProbe) -> str:
    """bf16 where every GPU computes it natively (compute capability 8.0, Ampere, and
    up); fp16 when one does not or cannot say (drivers before R510 do not report it)."""
    if not gpus.gpus:
        return "bfloat16"
    caps = [g.compute_capability for g in gpus.gpus]
    if all(c is not None and float(c) >= 8.0 for c in caps):
        return "bfloat16"
    return "float16"


def serve_command(shape: ModelShape, option: str, n_ctx: int, gpus: GpuProbe,
                  budget: Budget | None = None) -> str:
    """The ``starchart serve`` line for an option. HF checkpoints run on the
    transformers engine (settings ``engine``, ``dtype``, ``quantize``), which splits a
    model across several GPUs itself; a GGUF offloads with ``--n-gpu-layers`` and, on
    several GPUs, ``--tensor-split``."""
    model = shape.name if " " not in shape.name else f'"{shape.name}"'
    if shape.source == "gguf":
        gpu = ""
        if budget is not None and budget.device == "gpu":
            gpu = " --n-gpu-layers -1"
            if budget.split:
                gpu += f" --tensor-split {tensor_split(budget.gpus_free)}"
        return f"starchart serve --model {model}{gpu} --n-ctx {n_ctx}"
    flags = {"fp32": "--dtype float32", "fp16/bf16": f"--dtype {_torch_dtype(gpus)}",
             "int8": "--quantize 8bit", "int4": "--quantize 4bit"}[option]
    return f"starchart serve --model {model} --engine transformers {flags} --n-ctx {n_ctx}"


def plan(shape: ModelShape, *, n_ctx: int, batch: int, gpus: GpuProbe,
         ram_available: int | None, ready: Readiness | None = None) -> Plan:
    if n_ctx < 1 or batch < 1:
        raise BadRequest("n_ctx and batch must be at least 1", param="n_ctx" if n_ctx < 1
                         else "batch")
    ready = ready or Readiness()
    is_gguf = shape.source == "gguf"
    # A GGUF whose llama.cpp cannot offload runs on the CPU: planned against RAM.
    budget = free_memory(gpus, ram_available, use_gpu=not (is_gguf and ready.llama_gpu is False))
    device = budget.device
    extra_gpus = max(0, len(budget.gpus_free) - 1) if device == "gpu" else 0
    result = Plan(shape, n_ctx, batch, budget)
    for precision in ("fp32", "fp16/bf16", "int8", "int4"):
        weights = weight_bytes(shape, precision)
        act = 4 if precision == "fp32" else 2
        runnable, note, blocked = True, "", None
        if is_gguf:
            runnable, note = False, f"for comparison: this file is {shape.gguf_quant}"
        elif precision in ("int8", "int4") and device == "cpu":
            runnable, note = False, "bitsandbytes 8/4-bit needs an NVIDIA GPU"
        elif device == "gpu" and ready.torch_gpu is False:
            runnable, note, blocked = False, "torch cannot use the GPU", ready.torch_fix
        elif precision in ("int8", "int4") and ready.bnb is False:
            runnable, note, blocked = False, "bitsandbytes does not work here", ready.bnb_fix
        overhead = overhead_bytes(shape, weights, n_ctx, batch, device=device,
                                  engine="transformers", act_bytes=act)
        result.options.append(Option(
            precision, weights, kv_cache_bytes(shape, n_ctx, batch, act),
            overhead + extra_gpus * int(0.5 * GB), device, runnable, note,
            blocked_by=blocked or None))
    if is_gguf and shape.gguf_weight_bytes is not None:
        weights = shape.gguf_weight_bytes
        note = "llama.cpp, this file as it is"
        if gpus.gpus and ready.llama_gpu is False:
            note += " (on the CPU: this llama.cpp build has no GPU offload)"
        result.options.append(Option(
            f"gguf {shape.gguf_quant}", weights, kv_cache_bytes(shape, n_ctx, batch),
            overhead_bytes(shape, weights, n_ctx, batch, device=device, engine="llamacpp")
            + extra_gpus * int(0.3 * GB),
            device, True, note))
    for option in result.options:
        option.fits = budget.free is not None and option.runnable and option.total <= budget.free
        if option.runnable:
            option.command = serve_command(shape, option.name, n_ctx, gpus, budget)
    # Best: the most precise option that fits. On a GPU fp32 buys nothing for
    # inference over 16-bit, so it comes last there; on a CPU it is first
    # (every CPU computes it fast; bf16 is fast only with AVX512_BF16/AMX).
    order = ["fp16/bf16", "int8", "int4", "fp32"] if device == "gpu" else \
        ["fp32", "fp16/bf16", "int8", "int4"]
    ranked = sorted(result.options, key=lambda o: -1 if o.name.startswith("gguf")
                    else order.index(o.name))
    result.ranked = ranked
    result.best = next((o for o in ranked if o.fits), None)
    return result
