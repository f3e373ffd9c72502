"""The upstream servers a remote model is served by: reachable, and with which models."""

from __future__ import annotations

from typing import Any

import httpx

from starchart.doctor.report import Section, fail, ok, warn
from starchart.engines.upstreams import UpstreamModel


def _probe(url: str, api_key: str | None, timeout: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{url}/v1/models", headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        return {"url": url, "reachable": False, "error": f"{type(exc).__name__}: {exc}",
                "models": []}
    models: list[str] = []
    if response.status_code == 200:
        try:
            models = [m["id"] for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            pass
    return {"url": url, "reachable": response.status_code == 200,
            "error": None if response.status_code == 200
            else f"GET /v1/models answered {response.status_code}", "models": models}


def section(models: list[UpstreamModel], timeout: float = 5.0) -> Section:
    out = Section("upstreams", {})
    for model in models:
        found = [_probe(url, model.api_key, timeout) for url in model.urls]
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
