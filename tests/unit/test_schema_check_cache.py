"""A schema sent again is not checked again (jsonschema's check is the slow part of a
new schema), and the cache never lets an invalid schema through."""

from __future__ import annotations

from typing import Any

import pytest

from starchart.errors import BadRequest
from starchart.structured import grammar


def test_the_same_schema_is_checked_once_and_a_bad_one_is_still_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[Any] = []
    real = grammar.check_schema

    def counting(schema: Any, *, param: str) -> dict[str, Any]:
        checked.append(schema)
        return real(schema, param=param)

    monkeypatch.setattr(grammar, "check_schema", counting)
    schema = {"type": "object", "properties": {"cache_probe_a": {"type": "integer"}}}
    first = grammar.schema_grammar(schema, param="p")
    again = grammar.schema_grammar(dict(schema), param="p")
    assert again == first
    assert len(checked) == 1
    bad = {"type": "object", "properties": {"cache_probe_a": {"type": "integr"}}}
    for _ in range(2):
        with pytest.raises(BadRequest) as refused:
            grammar.schema_grammar(bad, param="response_format.json_schema.schema")
        assert refused.value.param == "response_format.json_schema.schema"
    assert len(checked) == 3  # a refused schema is never remembered
