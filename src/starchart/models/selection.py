"""Which files of a repository make the model: the same rules for the hub's
listing (``models pull``) and for a snapshot already in the HF cache.

- A GGUF repository: one ``.gguf`` (or one split set, ``-00001-of-00003.gguf``),
  chosen by ``:QUANT`` (a token of the file name, ``Q4_K_M``) or ``:FILE``.
  None or several matching: an error listing what is there.
- A transformers repository: the safetensors weights (and their index), the
  config, the generation config and the tokenizer files; nothing else (no
  ``.py``: remote code stays off). Pickle weights (``.bin``, ``.pt``, ``.pth``)
  only with ``allow_pickle`` and only when there are no safetensors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Literal

from starchart.doctor.units import gb
from starchart.errors import BadRequest

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                   "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt",
                   "merges.txt", "chat_template.jinja", "chat_template.json", "*.tiktoken",
                   "spiece.model", "sentencepiece.bpe.model")
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)

Kind = Literal["gguf", "transformers"]


@dataclass(frozen=True)
class Selection:
    kind: Kind
    files: tuple[str, ...]
    format: Literal["gguf", "safetensors", "pickle"]

    @property
    def gguf(self) -> str | None:
        """The file llama.cpp opens (the first of a split set)."""
        return self.files[0] if self.kind == "gguf" else None


def is_pickle(name: str) -> bool:
    return name.lower().endswith(PICKLE_SUFFIXES)


def _listing(files: dict[str, int | None], names: Iterable[str]) -> str:
    return "; ".join(f"{n} ({gb(files[n]) if files.get(n) is not None else '? GB'})"
                     for n in sorted(names))


def _quant_matches(pattern: str, name: str) -> bool:
    """``Q4_K_M`` matches ``model-Q4_K_M.gguf`` and ``model.q4_k_m.gguf``, not
    ``model-Q4_K_M_L.gguf`` or ``model-IQ4_K_M.gguf``: a whole token of the name."""
    token = re.escape(pattern)
    return re.search(rf"(?<![A-Za-z0-9]){token}(?![A-Za-z0-9_])", name, re.IGNORECASE) is not None


def _one_gguf(repo: str, chosen: list[str], files: dict[str, int | None], what: str) -> list[str]:
    """One file, or one complete split set; otherwise say what there is."""
    if len(chosen) == 1:
        return chosen
    sets = {_SPLIT.sub("", name) for name in chosen}
    if chosen and len(sets) == 1 and all(_SPLIT.search(n) for n in chosen):
        parts = sorted(chosen)
        total = int(_SPLIT.search(parts[0])[2])  # type: ignore[index]
        if len(parts) == total:
            return parts
    everything = [n for n in files if n.lower().endswith(".gguf")]
    if not chosen:
        raise BadRequest(f"{what} matches no GGUF file of {repo}. It has: "
                         f"{_listing(files, everything)}", param="repo")
    raise BadRequest(f"{what} matches several GGUF files of {repo}: {_listing(files, chosen)}."
                     f" Name one with {repo}:QUANT (e.g. :Q4_K_M) or {repo}:FILE",
                     param="repo")


def select(repo: str, files: dict[str, int | None], selector: str | None = None, *,
           allow_pickle: bool = False) -> Selection:
    """``files``: every file of the repository (path -> size, None when unknown)."""
    ggufs = sorted(n for n in files if n.lower().endswith(".gguf"))
    if selector is not None:
        if selector in files:
            if is_pickle(selector) and not allow_pickle:
                raise _pickle_refused(repo, [selector])
            if selector.lower().endswith(".gguf"):
                return Selection("gguf", tuple(_one_gguf(repo, [selector], files, selector)),
                                 "gguf")
            raise BadRequest(f"{selector} is not a model file: name a .gguf of {repo}, or"
                             f" pull {repo} without :FILE for its checkpoint", param="repo")
        chosen = [n for n in ggufs if _quant_matches(selector, n.rsplit("/", 1)[-1])]
        if not ggufs:
            raise BadRequest(f"{repo} has no GGUF files, so :{selector} selects nothing; pull"
                             f" {repo} without it for its checkpoint", param="repo")
        return Selection("gguf", tuple(_one_gguf(repo, chosen, files, f":{selector}")), "gguf")
    if "config.json" in files:
        return _checkpoint(repo, files, allow_pickle=allow_pickle)
    if ggufs:
        return Selection("gguf", tuple(_one_gguf(repo, ggufs, files, "the repository")),
                         "gguf")
    raise BadRequest(f"{repo} has neither GGUF files nor a config.json: not a model"
                     f" starchart can run. It has: {_listing(files, list(files)[:20])}",
                     param="repo")


def _checkpoint(repo: str, files: dict[str, int | None], *, allow_pickle: bool) -> Selection:
    def wanted(name: str) -> bool:
        return "/" not in name and any(fnmatch(name, p) for p in (*CONFIG_FILES,
                                                                    *TOKENIZER_FILES))

    support = [n for n in files if wanted(n)]
    safetensors = [n for n in files if "/" not in n and n.endswith(".safetensors")]
    if safetensors:
        index = [n for n in files if n == "model.safetensors.index.json"]
        return Selection("transformers", tuple(sorted(support + safetensors + index)),
                         "safetensors")
    pickles = [n for n in files if "/" not in n and is_pickle(n)]
    if not pickles:
        raise BadRequest(f"{repo} has a config.json but no weights (no .safetensors)",
                         param="repo")
    if not allow_pickle:
        raise _pickle_refused(repo, pickles)
    index = [n for n in files if n == "pytorch_model.bin.index.json"]
    return Selection("transformers", tuple(sorted(support + pickles + index)), "pickle")


def _pickle_refused(repo: str, names: list[str]) -> BadRequest:
    return BadRequest(
        f"{repo} has its weights only as pickle files ({', '.join(sorted(names)[:4])}):"
        " loading a pickle can run any code its author put in it. Refused; pass"
        " --allow-pickle if you trust this repository, or look for a safetensors or GGUF"
        " version of the model", param="allow_pickle")
