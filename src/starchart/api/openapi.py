"""The OpenAPI schema says what the server really answers.

Routes declare the errors their own logic raises (``errors(404, 503)``) and,
when they stream, their ``text/event-stream`` answer (``streams(Chunk)``).
What every route shares is added here, where it happens: the 400 of the
``Host`` check and the 401 of the key check (``api/auth.py``, not on public
paths), the 413 of the body limit (``api/errors.py``) on routes that read a
body. FastAPI's 422 goes: invalid input is answered with a 400.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from starchart.api.auth import is_public
from starchart.api.protocol import ErrorResponse

ERRORS = {
    400: "Invalid request: the parameter named in error.param (or a Host this server"
         " does not answer to)",
    401: "No valid API key (once keys exist)",
    404: "No such model or object",
    409: "The model has requests in flight (unload it when they are done)",
    413: "The request body is over the limit (setting max_body_bytes)",
    503: "The model is not loaded (still loading, or its load failed), or it does not fit"
         " the memory budget (code memory_budget_exceeded, with error.memory)",
}
_REF = "#/components/schemas/{model}"


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route for the errors it raises itself."""
    return {status: {"model": ErrorResponse, "description": ERRORS[status]}
            for status in statuses}


def streams(chunk: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The ``text/event-stream`` 200 of a route asked to stream."""
    return {200: {"content": {"text/event-stream": {
        "schema": {"type": "string",
                   "description": f"Server-sent events: `data: <{chunk.__name__}>` frames"
                                  " (an error mid-stream as `data: <ErrorResponse>`), then"
                                  " `data: [DONE]`."},
        "x-starchart-chunk": {"$ref": _REF.format(model=chunk.__name__)},
    }}}}


def _add(components: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template=_REF)
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components.setdefault(model.__name__, schema)


def _error(status: int) -> dict[str, Any]:
    return {"description": ERRORS[status], "content": {
        "application/json": {"schema": {"$ref": _REF.format(model="ErrorResponse")}}}}


def describe(app: FastAPI, chunks: tuple[type[BaseModel], ...]) -> None:
    """Make ``app.openapi()`` build the honest schema (once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                             description=app.description)
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                responses = operation["responses"]
                responses.pop("422", None)
                shared = [400, *([] if is_public(path) else [401]),
                          *([413] if "requestBody" in operation else [])]
                for status in shared:
                    responses.setdefault(str(status), _error(status))
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        models: tuple[type[BaseModel], ...] = (ErrorResponse, *chunks)
        for model in models:
            _add(components, model)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
