"""Inference engines behind one interface (``base.Engine``)."""

from __future__ import annotations

from starchart.engines.base import Engine
from starchart.registry import resolve
from starchart.settings import Settings


def create_engine(settings: Settings) -> Engine:
    """Build (not load) the engine ``settings`` asks for."""
    spec = resolve(settings.model)
    from starchart.engines.llamacpp import LlamaCppEngine

    return LlamaCppEngine(spec.id, spec.path, n_ctx=settings.n_ctx, threads=settings.threads)
