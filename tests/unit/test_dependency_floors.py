"""The lowest versions pyproject.toml allows must have what the code relies on."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _requirements(name: str) -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    every = [*project["dependencies"],
             *(r for group in project["optional-dependencies"].values() for r in group)]
    found = [Requirement(r) for r in every if Requirement(r).name == name]
    assert found, name
    return found


def test_psycopg_keeps_notifications_received_during_a_query() -> None:
    # The key listener (store/db.py) runs queries on its listening connection (its
    # confirmations, its heartbeat) and reads notifications with notifies(timeout=...)
    # in between: notifies() takes a timeout from 3.2.0, and only from 3.2.4 does
    # psycopg keep a notification that arrives during a query for the next notifies()
    # (3.2.3 and older drop it: a revoked key would stay valid in a server's memory).
    for requirement in _requirements("psycopg"):
        assert not requirement.specifier.contains("3.2.3"), requirement
        assert requirement.specifier.contains("3.2.4"), requirement
