"""Settings kept as written and parsed later (--keep-alive, --memory-budget) are
refused at start-up when they cannot be parsed, naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from starchart.settings import Settings


@pytest.mark.parametrize(("field", "bad", "expected"), [
    ("keep_alive", "soon", "not a duration"),
    ("memory_budget", "lots", "not a size"),
])
def test_an_unparsable_value_is_refused_at_start_up(tmp_path: Path, field: str, bad: str,
                                                     expected: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(home=tmp_path, **{field: bad})
    error = refused.value.errors()[0]
    assert error["loc"] == (field,) and expected in error["msg"]


def test_parsable_values_are_kept_as_written(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, keep_alive="5m", memory_budget="4GB")
    assert (settings.keep_alive, settings.memory_budget) == ("5m", "4GB")
    assert settings.keep_alive_seconds == 300
