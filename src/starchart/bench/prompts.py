"""The prompts a run sends: the fixed default set shipped here, or the user's file.

A file is either JSON shaped like ``prompts.json`` (``{"prompts": [{"name": ...,
"messages": [...]}]}``) or plain text with one user prompt per non-empty line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from starchart.errors import BadRequest

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Prompt:
    name: str
    messages: Messages


def default_prompts() -> list[Prompt]:
    text = resources.files("starchart.bench").joinpath("prompts.json").read_text("utf-8")
    return _from_json(json.loads(text), "the default prompt set")


def load_prompts(path: Path | None) -> list[Prompt]:
    if path is None:
        return default_prompts()
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise BadRequest(f"cannot read the prompts file {path}: {exc.strerror}",
                         param="prompts") from None
    if path.suffix == ".json":
        try:
            return _from_json(json.loads(text), str(path))
        except ValueError as exc:
            raise BadRequest(f"{path} is not valid JSON: {exc}", param="prompts") from None
    prompts = [Prompt(f"line-{i}", [{"role": "user", "content": line.strip()}])
               for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not prompts:
        raise BadRequest(f"{path} holds no prompts", param="prompts")
    return prompts


def _from_json(data: object, where: str) -> list[Prompt]:
    items = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise BadRequest(f"{where}: expected {{\"prompts\": [{{\"name\": ..., \"messages\":"
                         " [...]}, ...]}", param="prompts")
    prompts = []
    for i, item in enumerate(items):
        messages = item.get("messages") if isinstance(item, dict) else None
        if not (isinstance(messages, list) and messages and all(
                isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str) for m in messages)):
            raise BadRequest(f"{where}: prompts[{i}].messages must be a non-empty list of"
                             " {\"role\": ..., \"content\": ...}", param="prompts")
        prompts.append(Prompt(str(item.get("name") or f"prompt-{i}"), messages))
    return prompts
