"""Request bodies: read as JSON whatever their content type, and the bodies a
handler reads itself (the CLIP routes, the WebSocket's frames), parsed by the
same protocol models, and failing with the same 400s, as those FastAPI reads.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from starchart.api.errors import error_response, validation_error
from starchart.errors import BadRequest

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class JsonBodies:
    """Read a request body as JSON whatever content type it declares.

    ``curl -d`` sends ``application/x-www-form-urlencoded``, and many scripts send
    none: as OpenAI-compatible servers commonly do, such a body is parsed as JSON.
    Two exceptions: ``multipart/form-data`` (a CLIP upload) stays as it is; and a
    request from a browser page (it carries ``Origin``) must declare JSON, since a
    page may post a form or ``text/plain`` body to any address without asking
    first (cross-site request forgery), but never ``application/json``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        declared = next((v.decode("latin-1") for k, v in headers
                         if k.lower() == b"content-type"), "")
        if _is_json(declared) or declared.lower().startswith("multipart/form-data"):
            await self.app(scope, receive, send)
            return
        if any(k.lower() == b"origin" for k, _ in headers):
            error = BadRequest(f"send the body as application/json (got {declared!r})",
                               param="Content-Type", code="unsupported_media_type")
            await error_response(error)(scope, receive, send)
            return
        headers = [(k, v) for k, v in headers if k.lower() != b"content-type"]
        headers.append((b"content-type", b"application/json"))
        await self.app({**scope, "headers": headers}, receive, send)

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
    """The body as JSON (``JsonBodies`` has already vetted its content type)."""
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}",
                         code="invalid_json") from None
