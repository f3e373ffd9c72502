"""`starchart serve` keeps its start-up objects out of the garbage collector's full
collections (``server.freeze_start_up_objects``), and what comes later (a model
loaded, then unloaded) is still collected."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref
from pathlib import Path

from starchart.api.app import create_app
from starchart.server import freeze_start_up_objects
from starchart.settings import Settings

SRC = Path(__file__).resolve().parents[2] / "src"


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_start_up_objects_are_frozen_and_later_cycles_still_collected(tmp_path: Path
                                                                          ) -> None:
    app = create_app(Settings(home=tmp_path, load_on_demand=True))
    try:
        assert any(o is app.router for o in gc.get_objects())
        freeze_start_up_objects()
        assert gc.get_freeze_count() > 10_000
        assert not any(o is app.router for o in gc.get_objects())  # no longer scanned
        later = _Node()
        gone = weakref.ref(later)
        del later
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
        app.state.store.close()


def test_serve_freezes_before_it_serves(tmp_path: Path) -> None:
    """`serve` calls the freeze after the app is built and before uvicorn runs (in a
    process of its own: uvicorn's Config sets up the process's logging)."""
    script = (
        "import gc, sys\n"
        "from starchart import server\n"
        "from starchart.settings import Settings\n"
        "server.DrainingServer.run = lambda self: print('frozen', gc.get_freeze_count())\n"
        f"server.serve(Settings(home={str(tmp_path)!r}, load_on_demand=True))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert done.returncode == 0, done.stderr
    frozen = int(done.stdout.split("frozen ")[1].split()[0])
    assert frozen > 10_000, done.stdout
