"""JSON schemas -> checked llguidance grammars.

Every schema is checked before anything is generated, so a bad one is a 400
naming the parameter: not an object, over the size limit, invalid as a JSON
schema (Draft 2020-12, or the draft its ``$schema`` names), or using a keyword
llguidance cannot enforce -- that one is refused, never silently ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from starchart.errors import BadRequest

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions  # declared in its stubs only

# The largest schema accepted, as compact JSON text.
MAX_SCHEMA_CHARS = 65_536
# Distinct schemas whose checked grammar is kept (tools and response formats repeat).
GRAMMAR_CACHE_SIZE = 256

# JSON the way models have seen it most: ", " and ": " and no other whitespace. Free
# whitespace would let a small model loop on newlines until max_tokens.
JSON_STYLE: JsonCompileOptions = {"whitespace_flexible": False, "item_separator": ", ",
                                  "key_separator": ": "}

_UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[(.*?)\]")


@dataclass(frozen=True)
class Grammar:
    """What an engine constrains a sequence with: llguidance grammar text."""

    text: str
    # What it came from, for messages and logs ("response_format", "tool_choice").
    source: str = "response_format"


def check_schema(schema: Any, *, param: str) -> dict[str, Any]:
    """Refuse a schema that is not an object, too big or invalid (400 with ``param``)."""
    if not isinstance(schema, dict):
        raise BadRequest(f"{param} must be a JSON object (a JSON schema), not"
                         f" {type(schema).__name__}", param=param)
    try:
        text = json.dumps(schema, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"{param} is not JSON: {exc}", param=param) from None
    if len(text) > MAX_SCHEMA_CHARS:
        raise BadRequest(f"{param} is {len(text)} characters of JSON; the limit is"
                         f" {MAX_SCHEMA_CHARS}", param=param)
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator
                                            ).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise BadRequest(f"{param} is not a valid JSON schema: {exc.message}"
                         + (f" (at {where})" if where else ""), param=param) from None
    return schema


def schema_grammar(schema: Any, *, param: str, source: str = "response_format") -> Grammar:
    """A checked schema's grammar; the same schema is checked and built once (cached).

    The check (jsonschema against its metaschema) is the slow part of a new schema,
    ~5-12 ms for 10 fields; clients send the same schema with every request.
    """
    # Not key-sorted: properties are generated in the order the schema lists them.
    text = _compact(schema)
    if text is None or text not in _CHECKED:
        check_schema(schema, param=param)
        text = json.dumps(schema, separators=(",", ":"))
        _CHECKED[text] = None
        while len(_CHECKED) > GRAMMAR_CACHE_SIZE:
            del _CHECKED[next(iter(_CHECKED))]
    error, grammar = _compile(text)
    if error:
        found = _UNIMPLEMENTED.search(error)
        if found:
            keywords = ", ".join(k.strip().strip('"') for k in found.group(1).split(","))
            raise BadRequest(f"{param} uses {keywords}: a keyword constrained decoding cannot"
                             " enforce (it would be ignored, so it is refused)", param=param)
        raise BadRequest(f"{param} cannot be enforced: {error}", param=param)
    return Grammar(grammar, source)


def json_object_grammar() -> Grammar:
    """``response_format: {"type": "json_object"}``: any JSON object."""
    return schema_grammar({"type": "object"}, param="response_format")


# Compact JSON texts of schemas that passed ``check_schema`` (oldest first).
_CHECKED: dict[str, None] = {}


def _compact(schema: Any) -> str | None:
    """A dict schema as compact JSON, or None (not a dict, or not JSON: the check says why)."""
    if not isinstance(schema, dict):
        return None
    try:
        return json.dumps(schema, separators=(",", ":"))
    except (TypeError, ValueError):
        return None


@lru_cache(maxsize=GRAMMAR_CACHE_SIZE)
def _compile(schema_text: str) -> tuple[str, str]:
    """(error message or "", grammar text) for a schema given as compact JSON."""
    import llguidance

    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema_text,
                                                                defaults=JSON_STYLE)
    except ValueError as exc:
        return str(exc), ""
    return llguidance.LLMatcher.validate_grammar(grammar, None), grammar
