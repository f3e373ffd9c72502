"""``models rm``: free what one model uses in the Hugging Face cache, nothing else.

Only the model's own files go: each snapshot link and the blob it points to,
unless another snapshot link or another name still uses that blob. Every path
is checked to be inside the model's repository folder of the cache before it
is deleted. A name given to a path (``models add``) only loses its name: those
files are the user's.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from starchart.models.catalog import Catalog, Located, inside_cache, locate, repo_folder


@dataclass
class Removal:
    name: str
    links: list[Path] = field(default_factory=list)  # snapshot entries
    blobs: list[Path] = field(default_factory=list)  # their targets no one else uses
    kept: list[Path] = field(default_factory=list)  # shared with another name
    repo_dir: Path | None = None

    @property
    def size(self) -> int:
        return sum(b.stat().st_size for b in self.blobs if b.exists())


def plan_removal(located: Located, home: Path) -> Removal:
    removal = Removal(located.name)
    if located.origin != "hub" or located.path is None:
        return removal
    repo = located.source.partition(":")[0]
    root = repo_folder(repo)
    removal.repo_dir = root
    others: set[Path] = set()
    for name in Catalog(home).entries():
        if name == located.name:
            continue
        other = locate(name, home)
        if other.origin == "hub" and other.source.partition(":")[0] == repo:
            others.update(f.resolve() for f in other.files)
    mine = {f.resolve() for f in located.files}
    # Links of other snapshots (another revision) that share a blob keep it.
    shared = {link.resolve() for link in (root / "snapshots").rglob("*")
              if link.is_symlink() and link not in located.files}
    for link in located.files:
        real = inside_cache(link, root)
        removal.links.append(link)
        if real in others or real in shared:
            removal.kept.append(real)
        elif real != link.absolute() and real in mine and real not in removal.blobs:
            removal.blobs.append(real)
    return removal


def apply_removal(removal: Removal) -> None:
    for link in removal.links:
        link.unlink(missing_ok=True)
    for blob in removal.blobs:
        blob.unlink(missing_ok=True)
    root = removal.repo_dir
    if root is None or not root.is_dir():
        return
    snapshots = root / "snapshots"
    # Empty folders of the snapshot go; a repository left with no file goes whole.
    for folder in sorted((p for p in snapshots.rglob("*") if p.is_dir()),
                         key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not snapshots.is_dir() or not any(p for p in snapshots.rglob("*") if not p.is_dir()):
        shutil.rmtree(root)
