"""What ``models list`` and ``models info`` show, read from the files without
loading weights (a GGUF's metadata, a checkpoint's config and safetensors
headers), through the doctor's planner."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starchart.doctor.planner import ModelShape, shape_from_checkpoint, shape_from_gguf
from starchart.doctor.safetensors_header import read_checkpoint
from starchart.errors import StarchartError
from starchart.models.catalog import Catalog, Located, locate

TEMPLATE_LINES = 6


@dataclass
class Row:
    """One model as ``models list`` shows it."""

    name: str
    origin: str
    source: str
    engine: str
    format: str | None
    quantization: str | None
    parameters: int | None
    size: int
    path: str | None
    downloaded: bool
    problem: str | None = None  # why the files cannot be read
    loaded: str | None = None  # with --url: the server's state for it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _format(located: Located) -> str | None:
    if located.selection is not None:
        return located.selection.format
    path = located.path
    if path is None:
        return None
    if path.is_file():
        return "gguf" if path.suffix.lower() == ".gguf" else path.suffix.lstrip(".") or None
    if any(path.glob("*.safetensors")):
        return "safetensors"
    return "pickle" if any(path.glob("*.bin")) else None


def shape_of(located: Located) -> ModelShape:
    assert located.path is not None
    if located.path.is_file():
        return shape_from_gguf(located.path, name=located.name)
    return shape_from_checkpoint(located.path, name=located.name)


def _dtype(folder: Path) -> str | None:
    """The dtype most of a checkpoint's parameters have (its safetensors headers)."""
    counts: Counter[str] = Counter()
    for tensor in read_checkpoint(folder):
        counts[tensor.dtype] += tensor.elements
    return counts.most_common(1)[0][0] if counts else None


def row(located: Located) -> Row:
    out = Row(name=located.name, origin=located.origin, source=located.source,
              engine=located.engine, format=_format(located), quantization=None,
              parameters=None, size=located.size,
              path=str(located.path) if located.path else None,
              downloaded=located.path is not None)
    if located.path is None:
        return out
    try:
        shape = shape_of(located)
        out.parameters = shape.n_params
        out.quantization = shape.gguf_quant if shape.source == "gguf" else \
            _dtype(located.path) if out.format == "safetensors" else None
    except StarchartError as exc:
        out.problem = exc.message
    return out


def rows(home: Path) -> list[Row]:
    from starchart.registry import EMBEDDED

    result = []
    for name in [*EMBEDDED, *Catalog(home).entries()]:
        try:
            result.append(row(locate(name, home)))
        except StarchartError as exc:
            result.append(Row(name=name, origin="?", source="?", engine="?", format=None,
                              quantization=None, parameters=None, size=0, path=None,
                              downloaded=False, problem=exc.message))
    return result


# --- models info -----------------------------------------------------------------


def chat_template(located: Located) -> str | None:
    """The model's own chat template (None: it has none, e.g. a base model)."""
    from starchart.doctor import gguf

    path = located.path
    if path is None:
        return None
    if path.is_file():
        value = gguf.read(path).metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value.strip() else None
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    for name in ("chat_template.json", "tokenizer_config.json"):
        file = path / name
        if not file.is_file():
            continue
        try:
            value = json.loads(file.read_text()).get("chat_template")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if isinstance(value, list):  # [{"name": "default", "template": ...}, ...]
            value = next((t.get("template") for t in value if isinstance(t, dict)
                          and t.get("name") == "default"), None)
        if isinstance(value, str) and value.strip():
            return value
    return None


def template_summary(source: str | None) -> dict[str, Any]:
    from starchart.chat.templates import ChatTemplate

    if source is None:
        return {"present": False, "first_lines": [], "tools": False}
    lines = [line for line in source.strip().splitlines() if line.strip()]
    return {"present": True, "first_lines": lines[:TEMPLATE_LINES], "lines": len(lines),
            "tools": ChatTemplate(source).takes_tools}
