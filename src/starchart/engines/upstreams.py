"""Which models come from upstream servers: ``--upstream`` flags and ``models.toml``.

``--upstream NAME=URL[,URL...]`` (repeatable) serves NAME from those servers;
``--upstream-model NAME=MODEL`` gives the name they know it by and
``--upstream-key`` the key they want. A ``models.toml`` (``--models-file``)
says the same for many models, each with its own key::

    [models.llama-70b]
    urls = ["http://gpu1:8000", "http://gpu2:8000"]
    upstream_model = "meta-llama/Llama-3.1-70B-Instruct"   # default: the table's name
    api_key = "..."                                         # default: --upstream-key
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from starchart.errors import BadRequest
from starchart.settings import Settings


@dataclass(frozen=True)
class UpstreamModel:
    name: str  # what clients of starchart call it
    urls: tuple[str, ...]
    upstream_model: str  # what the upstream servers call it
    api_key: str | None = field(default=None, repr=False)  # never in a log line


def _url(url: str, where: str) -> str:
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadRequest(f"{where}: {url!r} is not an http(s) base URL"
                         " (e.g. http://127.0.0.1:8001)", param="upstream")
    # The OpenAI paths are added per request: accept a base that already ends in /v1
    # (before a gateway's query, if any).
    path = parts.path.rstrip("/").removesuffix("/v1")
    return urlunsplit(parts._replace(path=path))


def _key(key: object, where: str) -> str | None:
    """An API key as it can go in a header: text on one line."""
    if key is None:
        return None
    if not isinstance(key, str) or not key.isprintable():
        raise BadRequest(f"{where}: the API key must be text on one line, without control"
                         " characters", param="upstream_key")
    return key


def _pair(item: str, flag: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise BadRequest(f"{flag} {item!r}: expected NAME=VALUE", param=flag.lstrip("-"))
    return name.strip(), value.strip()


def upstream_models(settings: Settings) -> list[UpstreamModel]:
    """Every upstream model the settings name, flags first, then the models file."""
    renamed = dict(_pair(item, "--upstream-model") for item in settings.upstream_model)
    out: list[UpstreamModel] = []
    for item in settings.upstream:
        name, urls = _pair(item, "--upstream")
        out.append(UpstreamModel(
            name, tuple(_url(u, f"--upstream {name}") for u in urls.split(",") if u.strip()),
            renamed.pop(name, name), _key(settings.upstream_key, "--upstream-key")))
    if renamed:
        raise BadRequest(f"--upstream-model names {sorted(renamed)}, which no --upstream"
                         " serves", param="upstream_model")
    if settings.models_file is not None:
        out.extend(_from_file(settings))
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise BadRequest(f"an upstream model is named twice: {names}", param="upstream")
    return out


def _from_file(settings: Settings) -> list[UpstreamModel]:
    path = settings.models_file
    assert path is not None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadRequest(f"cannot read the models file {path}: {exc}",
                         param="models_file") from exc
    out = []
    for name, table in data.get("models", {}).items():
        urls = table.get("urls") if isinstance(table, dict) else None
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise BadRequest(f"{path}: [models.{name}] needs urls = [\"http://...\", ...]",
                             param="models_file")
        out.append(UpstreamModel(
            name, tuple(_url(u, f"{path} [models.{name}]") for u in urls),
            str(table.get("upstream_model", name)),
            _key(table.get("api_key", settings.upstream_key), f"{path} [models.{name}]")))
    if not out:
        raise BadRequest(f"{path} names no models (expected [models.NAME] tables)",
                         param="models_file")
    return out
