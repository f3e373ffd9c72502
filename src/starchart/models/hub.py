"""``starchart models pull REPO[:QUANT_OR_FILE]``: only the files the model needs,
through ``huggingface_hub`` (its cache layout, its resume, its auth), with a
progress bar, into the standard Hugging Face cache.

The hub's listing (with sizes) comes first: it picks the files and checks the
free disk space before a byte of weights moves. A connection that drops in the
middle of a file is resumed from where it stopped (an HTTP range request);
files already complete in the cache are never fetched again, so running the
same pull after an interruption continues with the file that was cut. Every
downloaded weights file is checked whole before the model gets its name.
``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` work as everywhere in the
Hugging Face tools. Every failure is one line (``StarchartError``), never a
traceback.
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from starchart.doctor.units import gb
from starchart.errors import BadRequest, NotFound, StarchartError, Unavailable
from starchart.models.catalog import Catalog, Entry, Located, hub_cache, locate_hub
from starchart.models.integrity import check_weights
from starchart.models.names import HubRef
from starchart.models.selection import select

T = TypeVar("T")


class Progress(tqdm):  # type: ignore[type-arg]
    """One bar per file on stderr, also when stderr is not a terminal (a log shows
    how far a long download got)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("name", None)
        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("mininterval", 0.5)
        kwargs["disable"] = False
        super().__init__(*args, **kwargs)


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def gated(repo: str) -> BadRequest:
    return BadRequest(f"{repo} is gated on the Hugging Face hub: accept its licence on"
                      f" https://huggingface.co/{repo}, then set HF_TOKEN (or run"
                      " `hf auth login`) and pull again", param="repo")


def explain(exc: BaseException, ref: HubRef, *, what: str = "") -> StarchartError:
    """A huggingface_hub / network failure as the one line the user reads."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo = ref.repo
    if isinstance(exc, OfflineModeIsEnabled):
        return Unavailable("HF_HUB_OFFLINE is set, and pulling needs the Hugging Face hub:"
                           " unset it, or copy the HF cache (~/.cache/huggingface) from a"
                           " machine that has the model")
    if isinstance(exc, GatedRepoError):
        return gated(repo)
    if isinstance(exc, RepositoryNotFoundError):
        return NotFound(f"no model {repo} on the Hugging Face hub ({endpoint()}); if it is"
                        " private, set HF_TOKEN", param="repo", code="model_not_found")
    if isinstance(exc, RevisionNotFoundError):
        return NotFound(f"{repo} has no revision {what or '(the one asked for)'}",
                        param="revision", code="model_not_found")
    if isinstance(exc, RemoteEntryNotFoundError):
        return NotFound(f"{repo} has no file {what}", param="repo", code="model_not_found")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        return Unavailable(f"the Hugging Face hub answered {status} for {repo}"
                           f"{' ' + what if what else ''}: {_first_line(exc)}")
    return Unavailable(f"cannot reach the Hugging Face hub at {endpoint()}"
                       f" ({type(exc).__name__}: {_first_line(exc)}); check the network, or"
                       " HF_ENDPOINT")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _hub(call: Callable[[], T], ref: HubRef, *, what: str = "") -> T:
    try:
        return call()
    except StarchartError:
        raise
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of the hub is one line
        raise explain(exc, ref, what=what) from None


def _free_space(folder: Path) -> int:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _quiet_hub_logs() -> None:
    # httpx logs each request at INFO and huggingface_hub each retry: the output is
    # the progress bars and one line per outcome.
    for client in ("httpx", "httpx2"):  # huggingface_hub 2 talks through httpx2
        logging.getLogger(client).setLevel(logging.WARNING)
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def _drop(path: Path) -> None:
    """A bad file out of the cache: the snapshot link and the blob it points to."""
    real = path.resolve()
    path.unlink(missing_ok=True)
    if real != path:
        real.unlink(missing_ok=True)


def pull(ref: HubRef, *, home: Path, revision: str | None = None,
         allow_pickle: bool = False, out: Any = None) -> Located:
    """Fetch what ``ref`` needs and name it ``str(ref)`` in the catalog."""
    from huggingface_hub import HfApi, get_token, hf_hub_download, try_to_load_from_cache

    out = out or sys.stderr
    _quiet_hub_logs()
    info = _hub(lambda: HfApi().model_info(ref.repo, revision=revision, files_metadata=True),
                ref, what=revision or "")
    if info.gated and get_token() is None:
        raise gated(ref.repo)
    sizes: dict[str, int | None] = {s.rfilename: s.size for s in info.siblings or []}
    chosen = select(ref.repo, sizes, ref.selector, allow_pickle=allow_pickle)
    commit = info.sha or revision
    cached = {f for f in chosen.files
              if isinstance(try_to_load_from_cache(ref.repo, f, revision=commit), str)}
    total = sum(sizes[f] or 0 for f in chosen.files)
    needed = sum(sizes[f] or 0 for f in chosen.files if f not in cached)
    cache = hub_cache()
    free = _free_space(cache)
    if needed > free:
        raise Unavailable(f"{ref} needs {gb(needed)} of disk and {cache} has {gb(free)} free:"
                          " free some space (`starchart models rm`), or point HF_HOME at a"
                          " larger disk")
    print(f"pulling {ref} from {endpoint()}: {len(chosen.files)} file(s), {gb(total)}"
          f" ({gb(needed)} to download) into {cache}", file=out, flush=True)
    paths: list[Path] = []
    for name in chosen.files:
        paths.append(Path(_hub(lambda n=name: hf_hub_download(  # type: ignore[misc]
            ref.repo, n, revision=revision, tqdm_class=Progress), ref, what=name)))
    for path in paths:
        if path.suffix.lower() in (".gguf", ".safetensors"):
            try:
                check_weights(path)
            except BadRequest as exc:
                _drop(path)
                raise BadRequest(f"{exc.message} (removed it from the cache)",
                                 param="repo") from None
    snapshot = _snapshot_of(paths[0], chosen.files[0])
    entry = Entry(name=str(ref), source=str(ref), revision=snapshot.name,
                  allow_pickle=chosen.format == "pickle")
    Catalog(home).put(entry)
    return locate_hub(entry.name, entry)


def _snapshot_of(path: Path, relative: str) -> Path:
    """The snapshot folder of a file downloaded as ``relative`` (may be in a subfolder)."""
    folder = path
    for _ in relative.split("/"):
        folder = folder.parent
    return folder
