"""Every failure -> an OpenAI-style error body, and never a traceback.

``StarchartError`` carries its own status; pydantic validation failures become
400s naming the parameter; anything else is a bug, logged here and answered
with a plain 500 that leaks nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starchart.errors import BadRequest, NotFound, PayloadTooLarge, StarchartError

log = logging.getLogger("starchart.api")


def error_response(exc: StarchartError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status)


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [p for p in loc if p != "body"]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def validation_error(exc: RequestValidationError) -> StarchartError:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return BadRequest("the request body is not valid JSON: "
                          f"{first.get('ctx', {}).get('error', 'parse error')}",
                          code="invalid_json")
    param = _param(tuple(first.get("loc", ())))
    if first.get("type") == "missing":
        return BadRequest(f"missing required parameter: {param!r}", param=param,
                          code="missing_required_parameter")
    message = f"invalid value for {param!r}: {first.get('msg')}" if param else first.get("msg")
    more = len(errors) - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return BadRequest(str(message), param=param)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarchartError)
    async def _starchart(_: Request, exc: StarchartError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(NotFound("no such route"))
        err = StarchartError(str(exc.detail))
        err.status = exc.status_code
        err.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        err.code = "http_error"
        return error_response(err)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(StarchartError("internal server error (logged on the server)"))


class BodySizeLimit:
    """Refuse bodies over ``limit`` bytes with a 413, by header or by counting."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is larger than the limit of {self.limit}"
                               " bytes (setting max_body_bytes)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await error_response(self._too_large())(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise self._too_large()
            return message

        await self.app(scope, counted, send)
