"""The committed page build (src/starchart/web/dist) is what web/ builds to.

`make run` serves the committed build without Node, so a source change that
was not rebuilt (`make web`) would ship a stale page: this rebuilds into a
temporary folder and compares every file. It needs Node and npm: `make test`
installs Debian's when they are missing, and without them this fails (a skip
would let a stale page ship unnoticed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from starchart.api.web import dist_dir

WEB = Path(__file__).resolve().parents[2] / "web"


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.timeout(900)
def test_committed_build_matches_the_source(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    assert npm is not None and shutil.which("node") is not None, (
        "node and npm are needed to rebuild the web page: `make test` installs them"
        " (as root), or run 'sudo apt-get install -y nodejs npm'")
    if not (WEB / "node_modules").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True,
                       capture_output=True, timeout=600)
    out = tmp_path / "dist"
    build = subprocess.run([npm, "run", "build"], cwd=WEB, capture_output=True, text=True,
                           env={**os.environ, "STARCHART_WEB_OUT": str(out)}, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    built, committed = digests(out), digests(dist_dir())
    differ = sorted(k for k in built.keys() & committed.keys() if built[k] != committed[k])
    assert built == committed, (
        "src/starchart/web/dist does not match web/: run `make web` and commit the result"
        f" (only built: {sorted(built.keys() - committed.keys())},"
        f" only committed: {sorted(committed.keys() - built.keys())},"
        f" differ: {differ})"
    )
