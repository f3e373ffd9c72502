"""The upstream servers a remote model is served by: reachable, and with which models.

Each is asked as the server asks it (``RemoteEngine.probe``: the same client,
key, path and TLS settings), once."""

from __future__ import annotations

import asyncio
from typing import Any

from starchart.doctor.report import Section, fail, ok, warn
from starchart.engines.remote import RemoteEngine, Timeouts
from starchart.engines.upstreams import UpstreamModel


async def _probe(models: list[UpstreamModel], timeout: float) -> list[list[dict[str, Any]]]:
    engines = [RemoteEngine(model, Timeouts(timeout, timeout, timeout, timeout), n_ctx=0)
               for model in models]
    try:
        await asyncio.gather(*(engine.probe(read_timeout=timeout) for engine in engines))
    finally:
        for engine in engines:
            await engine.close_clients()
    return [[{"url": u.url, "reachable": u.healthy, "error": u.error, "models": u.models}
             for u in engine.upstreams] for engine in engines]


def section(models: list[UpstreamModel], timeout: float = 5.0) -> Section:
    out = Section("upstreams", {})
    for model, found in zip(models, asyncio.run(_probe(models, timeout)), strict=True):
        out.facts[model.name] = {"upstream_model": model.upstream_model, "upstreams": found}
        for probe in found:
            check_id, title = f"upstream.{model.name}.{probe['url']}", f"{model.name} upstream"
            if not probe["reachable"]:
                out.checks.append(fail(check_id, title, f"{probe['url']}: {probe['error']}",
                                       "start the upstream server or fix its URL/key"))
            elif model.upstream_model not in probe["models"]:
                out.checks.append(warn(
                    check_id, title, f"{probe['url']} serves {probe['models']}, not"
                    f" {model.upstream_model!r}",
                    f"--upstream-model {model.name}=<one of those names>"))
            else:
                out.checks.append(ok(check_id, title,
                                     f"{probe['url']} reachable, serves {model.upstream_model}"))
    return out
