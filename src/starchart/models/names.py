"""Model names and hub references, checked before anything touches the disk.

A name is what ``--model`` and ``starchart models`` take: letters, digits and
``_ . - :``, with at most one ``/`` (``org/model:Q4_K_M`` reads like the hub id
it was pulled from). Never ``..``, never a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starchart.errors import BadRequest

_NAME = re.compile(r"^[A-Za-z0-9][\w.:-]*(/[\w.:-]+)?$")
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MAX_NAME = 200


def check_name(name: str, *, param: str = "name") -> str:
    """``name`` if it is a model name; otherwise one line saying why not."""
    if name.startswith(("/", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", name):
        raise BadRequest(f"{name!r} is a path, not a model name (a name is like 'gemma' or"
                         " 'org/model:Q4_K_M'; `starchart models add NAME PATH` names a path)",
                         param=param)
    if ".." in name:
        raise BadRequest(f"model name {name!r} contains '..'", param=param)
    if len(name) > MAX_NAME or not _NAME.match(name):
        raise BadRequest(f"{name!r} is not a model name: use letters, digits and _ . - :"
                         " with at most one '/' (at most 200 characters)", param=param)
    return name


@dataclass(frozen=True)
class HubRef:
    """``REPO[:QUANT_OR_FILE]`` as ``models pull`` and ``models add`` take it."""

    repo: str
    selector: str | None = None

    def __str__(self) -> str:
        return self.repo if self.selector is None else f"{self.repo}:{self.selector}"


def parse_ref(text: str, *, param: str = "repo") -> HubRef:
    repo, _, selector = text.partition(":")
    if ".." in text or not _REPO.match(repo):
        raise BadRequest(f"{text!r} is not a Hugging Face repository: give OWNER/NAME,"
                         " optionally :QUANT (e.g. :Q4_K_M) or :FILE", param=param)
    if selector and (selector.startswith("/") or "\\" in selector):
        raise BadRequest(f"{selector!r} is not a file of the repository", param=param)
    return HubRef(repo, selector or None)


def looks_like_ref(text: str) -> bool:
    try:
        parse_ref(text)
    except BadRequest:
        return False
    return True
