"""Request bodies a handler reads itself (the CLIP routes, the WebSocket's frames).

Parsed by the same protocol models, and failing with the same 400s, as the
bodies FastAPI reads.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from starchart.api.errors import validation_error
from starchart.errors import BadRequest

M = TypeVar("M", bound=BaseModel)


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``openapi_extra`` for a JSON body the handler reads itself."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


def parse(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(RequestValidationError(exc.errors())) from None


def parse_json(model: type[M], raw: str | bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_error(RequestValidationError(exc.errors())) from None


async def read_json(request: Request) -> Any:
    content_type = request.headers.get("content-type", "application/json").lower()
    if not content_type.startswith("application/json"):
        raise BadRequest(f"send application/json (got {content_type!r})",
                         code="unsupported_media_type")
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}",
                         code="invalid_json") from None
