"""Inference engines behind one interface (``base.Engine``)."""

from __future__ import annotations

from starchart.engines.base import Engine
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
        )
    spec = resolve(settings.model)
    from starchart.engines.llamacpp import LlamaCppEngine

    return LlamaCppEngine(spec.id, spec.path, n_ctx=settings.n_ctx, threads=settings.threads,
                          parallel=settings.parallel, max_queue=settings.max_queue,
                          prefill_chunk=settings.prefill_chunk)
