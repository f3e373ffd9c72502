"""The autouse fixture in tests/conftest.py keeps a developer's settings out of the tests."""

from __future__ import annotations

import os
from pathlib import Path

from starchart.settings import Settings

from tests.conftest import HARNESS_VARIABLES


def test_only_the_test_home_is_set(isolated_environment: Path) -> None:
    ours = {n for n in os.environ if n.startswith("STARCHART_")} - HARNESS_VARIABLES
    assert ours == {"STARCHART_HOME"}
    assert Settings().home == isolated_environment
