"""Inference engines behind one interface (``base.Engine``)."""

from __future__ import annotations

from starchart.engines.base import Engine
from starchart.errors import BadRequest
from starchart.registry import resolve
from starchart.settings import Settings


def create_engine(settings: Settings) -> Engine:
    """Build (not load) the engine ``settings`` asks for."""
    if settings.engine == "transformers":
        # Resolved at load: a hub id may need a download, which must not block start-up.
        from starchart.engines.transformers import TransformersEngine

        return TransformersEngine(
            settings.model, n_ctx=settings.n_ctx, device=settings.device, dtype=settings.dtype,
            quantize=settings.quantize, chat_template=settings.chat_template,
            trust_remote_code=settings.trust_remote_code, threads=settings.threads,
            home=settings.home,
        )
    if settings.quantize != "none":
        raise BadRequest(
            f"--quantize {settings.quantize} works on the transformers engine only (bitsandbytes"
            " on an NVIDIA GPU): add --engine transformers with a checkpoint folder or hub id."
            " On the llama.cpp engine a model's quantization is in its GGUF file: pick the file"
            " (Q8_0 is 8-bit, Q4_K_M a good 4-bit) with --model.", param="quantize")
    spec = resolve(settings.model, settings.home)
    if spec.path.is_dir():
        raise BadRequest(f"{settings.model} is a checkpoint folder ({spec.path}), not a GGUF"
                         " file: serve it with --engine transformers", param="model")
    from starchart.engines.llamacpp import LlamaCppEngine

    split = [float(x) for x in settings.tensor_split.split(",")] if settings.tensor_split \
        else None
    return LlamaCppEngine(spec.id, spec.path, n_ctx=settings.n_ctx, threads=settings.threads,
                          parallel=settings.parallel, max_queue=settings.max_queue,
                          prefill_chunk=settings.prefill_chunk,
                          n_gpu_layers=settings.n_gpu_layers, tensor_split=split)
