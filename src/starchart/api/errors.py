"""Every failure -> an OpenAI-style error body, and never a traceback.

``StarchartError`` carries its own status; pydantic validation failures become
400s naming the parameter; anything else is a bug, logged here and answered
with a plain 500 that leaks nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starchart.api.protocol import ErrorResponse
from starchart.errors import BadRequest, NotFound, PayloadTooLarge, StarchartError

log = logging.getLogger("starchart.api")


def error_response(exc: StarchartError) -> Response:
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return Response(ErrorResponse.of(exc).wire(), status_code=exc.status,
                    media_type="application/json", headers=headers)


# pydantic puts the member type of a union into the location ("str",
# "list[TextPart]", "function-after[...]"): not a parameter name.
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [p for p in loc if p not in ("body", "query", "path") and not (
        isinstance(p, str) and (p in _TYPE_TAGS or "[" in p or "-" in p))]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def _most_telling(errors: Sequence[Any]) -> Any:
    """The first error, or, when the field is a union (text or a list of parts), the
    alternative that got furthest: "a valid string" says little about a bad list item."""
    first = errors[0]
    if not str(first.get("type", "")).endswith("_type"):
        return first
    param = _param(tuple(first.get("loc", ()))) or ""
    for error in errors[1:]:
        if (not str(error.get("type", "")).endswith("_type")
                and (_param(tuple(error.get("loc", ()))) or "").startswith(param)):
            return error
    return first


def validation_error(exc: RequestValidationError) -> StarchartError:
    errors = exc.errors()
    first: dict[str, Any] = (_most_telling(errors) if errors
                             else {"loc": (), "msg": "invalid request"})
    if first.get("type") == "json_invalid":
        return BadRequest("the request body is not valid JSON: "
                          f"{first.get('ctx', {}).get('error', 'parse error')}",
                          code="invalid_json")
    param = _param(tuple(first.get("loc", ())))
    if first.get("type") == "missing":
        if param is None:
            return BadRequest("the request body is empty: send a JSON object",
                              code="missing_required_parameter")
        return BadRequest(f"missing required parameter: {param!r}", param=param,
                          code="missing_required_parameter")
    message = f"invalid value for {param!r}: {first.get('msg')}" if param else str(first.get("msg"))
    more = len(errors) - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return BadRequest(str(message), param=param)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarchartError)
    async def _starchart(_: Request, exc: StarchartError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_error(exc))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return error_response(NotFound("no such route"))
        err = StarchartError(str(exc.detail))
        err.status = exc.status_code
        err.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        err.code = "http_error"
        return error_response(err)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(StarchartError("internal server error (logged on the server)"))


class BodySizeLimit:
    """Refuse bodies over ``limit`` bytes with a 413.

    A declared Content-Length is checked up front (the server never delivers
    more than it declares). A chunked body is read here, up to the limit, and
    replayed to the app: refusing it from inside the app's own body reading
    would surface as the framework's generic 400.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLarge(f"the request body is larger than the limit of {self.limit}"
                                " bytes (setting max_body_bytes)")
        await error_response(error)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.limit:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if headers.get(b"transfer-encoding") is None:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            total += len(message.get("body", b""))
            if total > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
