"""`starchart serve` keeps its start-up objects out of the garbage collector's full
collections (``server.freeze_start_up_objects``), and what comes later (a model
loaded, then unloaded) is still collected."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from starchart.api.app import create_app
from starchart.server import freeze_start_up_objects
from starchart.settings import Settings


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
