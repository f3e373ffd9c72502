"""Named chat templates for models whose tokenizer has none.

StarChat-beta era checkpoints and base models ship no ``chat_template``; the
user names one with ``--chat-template NAME`` (or gives a path to a ``.jinja``
file). The sources live beside this module in ``named/*.jinja``; each comes
with the end-of-turn text that must stop generation.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from starchart.errors import BadRequest

# The text that closes an assistant turn, beyond the tokenizer's EOS token.
_END_OF_TURN: dict[str, tuple[str, ...]] = {
    "starchat": ("<|end|>",),
    "chatml": ("<|im_end|>",),
    "llama2": (),
    "zephyr": (),
}

# Special tokens that give a template-less model's format away: checked in this order.
_SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("starchat", ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")),
    ("chatml", ("<|im_start|>", "<|im_end|>")),
)


@dataclass(frozen=True)
class NamedTemplate:
    name: str
    source: str
    end_of_turn: tuple[str, ...]


def names() -> list[str]:
    return list(_END_OF_TURN)


def load(name_or_path: str) -> NamedTemplate:
    """A template by name (``starchat``...) or from a ``.jinja`` file."""
    if name_or_path in _END_OF_TURN:
        source = (resources.files("starchart.chat") / "named" / f"{name_or_path}.jinja"
                  ).read_text(encoding="utf-8")
        return NamedTemplate(name_or_path, source, _END_OF_TURN[name_or_path])
    path = Path(name_or_path).expanduser()
    if path.is_file():
        # A custom file names no end-of-turn text: EOS alone ends the reply.
        return NamedTemplate(path.stem, path.read_text(encoding="utf-8"), ())
    raise BadRequest(
        f"unknown chat template {name_or_path!r}: use one of {', '.join(names())}"
        " or a path to a .jinja file",
        param="chat_template",
    )


def detect(special_tokens: Collection[str]) -> str | None:
    """The named template whose marker tokens the tokenizer has, if any."""
    for name, markers in _SIGNATURES:
        if all(marker in special_tokens for marker in markers):
            return name
    return None
