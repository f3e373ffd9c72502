"""Inference engines behind one interface (``base.Engine``)."""

from __future__ import annotations

import re
from pathlib import Path

from starchart.engines.base import Engine
from starchart.errors import BadRequest
from starchart.registry import resolve
from starchart.settings import Settings

_SERVED_AS = re.compile(r"^([A-Za-z0-9][\w.:-]*)=(.+)$")


def served_as(entry: str) -> tuple[str | None, str]:
    """``--model NAME=PATH`` -> (NAME, PATH); a plain ``--model M`` -> (None, M).

    An existing file or folder whose name holds ``=`` is taken as a path."""
    match = _SERVED_AS.match(entry)
    if match is None or Path(entry).expanduser().exists():
        return None, entry
    return match.group(1), match.group(2)


def create_engines(settings: Settings) -> list[Engine]:
    """One engine (built, not loaded) per ``--model``; two with one name are refused."""
    engines = [create_engine(settings, entry) for entry in settings.model]
    names = [e.info.id for e in engines]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BadRequest(f"two --model entries are served as {', '.join(twice)}: name them"
                         " apart with NAME=PATH", param="model")
    return engines


def create_engine(settings: Settings, entry: str | None = None) -> Engine:
    """Build (not load) the engine of one ``--model`` entry (default: the first)."""
    name, model = served_as(entry if entry is not None else settings.default_model)
    if settings.engine == "transformers":
        # Resolved at load: a hub id may need a download, which must not block start-up.
        from starchart.engines.transformers import TransformersEngine

        engine: Engine = TransformersEngine(
            model, n_ctx=settings.n_ctx, device=settings.device, dtype=settings.dtype,
            quantize=settings.quantize, chat_template=settings.chat_template,
            trust_remote_code=settings.trust_remote_code, threads=settings.threads,
            home=settings.home,
        )
        if name is not None:
            engine.info.id = name
        return engine
    if settings.quantize != "none":
        raise BadRequest(
            f"--quantize {settings.quantize} works on the transformers engine only (bitsandbytes"
            " on an NVIDIA GPU): add --engine transformers with a checkpoint folder or hub id."
            " On the llama.cpp engine a model's quantization is in its GGUF file: pick the file"
            " (Q8_0 is 8-bit, Q4_K_M a good 4-bit) with --model.", param="quantize")
    spec = resolve(model, settings.home)
    if spec.path.is_dir():
        raise BadRequest(f"{model} is a checkpoint folder ({spec.path}), not a GGUF"
                         " file: serve it with --engine transformers", param="model")
    from starchart.engines.llamacpp import LlamaCppEngine

    split = [float(x) for x in settings.tensor_split.split(",")] if settings.tensor_split \
        else None
    return LlamaCppEngine(name or spec.id, spec.path, n_ctx=settings.n_ctx,
                          threads=settings.threads, parallel=settings.parallel,
                          max_queue=settings.max_queue,
                          prefill_chunk=settings.prefill_chunk,
                          n_gpu_layers=settings.n_gpu_layers, tensor_split=split)
