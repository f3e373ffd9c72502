"""The store tests run twice: on a SQLite file and on a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from starchart.settings import Settings

from tests.postgres import postgres  # noqa: F401 - the session's PostgreSQL server


@pytest.fixture(params=["sqlite", "postgresql"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings whose store is a fresh SQLite file or a fresh PostgreSQL database."""
    url = (request.getfixturevalue("postgres").new_database()
           if request.param == "postgresql" else None)
    return Settings(home=tmp_path / "home", n_ctx=2048, database_url=url)
