"""Hostile requests generated from the server's own OpenAPI schema (schemathesis):
a bounded, seeded number of examples per operation; no 500s, and every answer
conforms to the schema (status codes, content types, bodies)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from starchart.api.app import create_app
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port
from tests.reliability.figures import record

EXAMPLES = 4  # per operation


CALLS: dict[str, int] = {}  # status code -> answers


@pytest.fixture(scope="module")
def app_under_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home: Path = tmp_path_factory.mktemp("schemathesis-home")
    # A small context and short default answers keep generated requests quick.
    config = Settings(home=home, n_ctx=96, max_tokens=8)
    with LiveServer(create_app(config), free_port()) as server:
        yield server
    total, operations = sum(CALLS.values()), len(list(schema.get_all_operations()))
    record("schemathesis", f"{total} generated requests over {operations}"
           f" operations ({EXAMPLES} examples each, seeded, plus schemathesis' coverage"
           f" cases): 0 answers >= 500, all conforming; statuses {dict(sorted(CALLS.items()))}")


def _openapi() -> dict[str, Any]:
    """The schema, read at collection time from an app that never starts (no model
    is loaded, its throwaway data directory is removed at once)."""
    with tempfile.TemporaryDirectory() as home:
        app = create_app(Settings(home=Path(home)))
        try:
            return app.openapi()
        finally:
            app.state.store.close()


schema = schemathesis.openapi.from_dict(_openapi())


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_500_and_answers_conform(case: schemathesis.Case,
                                    app_under_test: LiveServer) -> None:
    response = case.call(base_url=app_under_test.url, timeout=60)
    CALLS[str(response.status_code)] = CALLS.get(str(response.status_code), 0) + 1
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
    case.validate_response(response, checks=[status_code_conformance,
                                             content_type_conformance,
                                             response_schema_conformance])


