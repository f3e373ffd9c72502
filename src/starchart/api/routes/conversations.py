"""/v1/conversations: stored multi-turn chats over HTTP (SSE) and WebSocket.

A conversation belongs to the API key that created it (``request.state.api_key_id``,
set by ``api/auth.py``); any other key gets the same 404 as for an id that
does not exist. Generation goes through ``store.turns`` (and so the service).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.requests import HTTPConnection

from starchart.api import generation
from starchart.api.auth import WS_SUBPROTOCOL
from starchart.api.conversation_protocol import (
    ConversationCreate,
    ConversationUpdate,
    ExportFormat,
    MessageCreate,
)
from starchart.api.errors import validation_error
from starchart.api.routes.chat import _chunk, _role_chunk
from starchart.api.streaming import cancel_on_disconnect
from starchart.engines.base import Finish, TextDelta
from starchart.errors import NotFound, PayloadTooLarge, StarchartError
from starchart.service import ChatService
from starchart.store import Store
from starchart.store.export import to_json, to_markdown
from starchart.store.turns import ConversationChat, Turn

router = APIRouter()


def _owner(conn: HTTPConnection) -> str | None:
    return getattr(conn.state, "api_key_id", None)


def _store(conn: HTTPConnection) -> Store:
    return conn.app.state.store


def _service(conn: HTTPConnection) -> ChatService:
    return conn.app.state.service


def _chat(conn: HTTPConnection) -> ConversationChat:
    return conn.app.state.conversation_chat


def _check_model(service: ChatService, model: str | None) -> None:
    if model is not None and model not in service.engines:
        served = ", ".join(service.engines) or "none"
        raise NotFound(f"model {model!r} is not served here (served: {served})",
                       param="model", code="model_not_found")


@router.post("/v1/conversations")
async def create_conversation(request: Request,
                              body: ConversationCreate | None = None) -> dict[str, Any]:
    body = body or ConversationCreate()
    _check_model(_service(request), body.model)
    conv = await asyncio.to_thread(
        _store(request).conversations.create, _owner(request), title=body.title,
        system_prompt=body.system_prompt, model=body.model)
    return conv.as_dict()


@router.get("/v1/conversations")
async def list_conversations(request: Request,
                             limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    convs = await asyncio.to_thread(_store(request).conversations.list, _owner(request),
                                    limit=limit)
    return {"object": "list", "data": [c.as_dict(with_messages=False) for c in convs]}


@router.get("/v1/conversations/{conversation_id}")
async def get_conversation(conversation_id: str, request: Request) -> dict[str, Any]:
    conv = await asyncio.to_thread(_store(request).conversations.get, conversation_id,
                                   _owner(request))
    return conv.as_dict()


@router.patch("/v1/conversations/{conversation_id}")
async def update_conversation(conversation_id: str, body: ConversationUpdate,
                              request: Request) -> dict[str, Any]:
    # Only the fields sent change; "system_prompt": null goes back to the server default.
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    conv = await asyncio.to_thread(_store(request).conversations.update, conversation_id,
                                   _owner(request), **changes)
    return conv.as_dict()


@router.delete("/v1/conversations/{conversation_id}")
async def delete_conversation(conversation_id: str, request: Request) -> dict[str, Any]:
    await asyncio.to_thread(_store(request).conversations.delete, conversation_id,
                            _owner(request))
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.get("/v1/conversations/{conversation_id}/export")
async def export_conversation(conversation_id: str, request: Request,
                              format: ExportFormat = "json") -> Response:  # noqa: A002
    conv = await asyncio.to_thread(_store(request).conversations.get, conversation_id,
                                   _owner(request))
    if format == "markdown":
        body, media, ext = to_markdown(conv), "text/markdown; charset=utf-8", "md"
    else:
        body, media, ext = to_json(conv), "application/json", "json"
    return Response(body, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{conversation_id}.{ext}"'})


async def _start(conn: HTTPConnection, conversation_id: str, body: MessageCreate) -> Turn:
    service = _service(conn)
    return await _chat(conn).start(conversation_id, _owner(conn), body.content,
                                   body.sampling(service.defaults), body.model)


def _extra(turn: Turn) -> dict[str, Any]:
    return {"conversation_id": turn.conversation_id, "message_id": turn.message_id,
            "user_message_id": turn.user_message.id, "dropped_turns": turn.dropped_turns}


@router.post("/v1/conversations/{conversation_id}/messages")
async def post_message(conversation_id: str, body: MessageCreate, request: Request) -> Any:
    """Append the user turn, generate the reply (streamed by default) and store it."""
    turn = await _start(request, conversation_id, body)
    if body.stream:
        def first(id_: str, created: int, model: str, include_usage: bool) -> dict[str, Any]:
            return {**_role_chunk(id_, created, model, include_usage), "starchart": _extra(turn)}

        return generation.stream(turn.events(), prefix="chatcmpl", model=turn.model,
                                 make=_chunk, object_name="chat.completion.chunk",
                                 include_usage=True, first=first)
    message = await cancel_on_disconnect(request, turn.result())
    return {"object": "conversation.turn", **_extra(turn), "message": message.as_dict(),
            "usage": message.usage}


def _error_frame(error: StarchartError) -> dict[str, Any]:
    return {"type": "error", **error.to_dict()}


def _parse(raw: str, limit: int) -> MessageCreate:
    if len(raw.encode("utf-8")) > limit:
        raise PayloadTooLarge(f"the message is larger than the limit of {limit} bytes"
                              " (setting max_body_bytes)")
    try:
        return MessageCreate.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_error(RequestValidationError(exc.errors())) from None


@router.websocket("/v1/conversations/{conversation_id}/ws")
async def conversation_ws(websocket: WebSocket, conversation_id: str) -> None:
    """Client frames ``{"content", ...sampling}``; server frames ``delta`` then
    ``done`` (or ``error``). A ``{"type": "stop"}`` frame stops the reply being
    generated; closing the socket does too (what was generated is stored).
    """
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=WS_SUBPROTOCOL if WS_SUBPROTOCOL in offered else None)
    limit = websocket.app.state.settings.max_body_bytes
    try:
        await asyncio.to_thread(_store(websocket).conversations.get, conversation_id,
                                _owner(websocket), with_messages=False)
    except StarchartError as exc:
        await websocket.send_json(_error_frame(exc))
        await websocket.close(code=4404 if isinstance(exc, NotFound) else 1011)
        return
    pending: list[str] = []
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            raw = pending.pop(0) if pending else await websocket.receive_text()
            if _is_stop(raw):
                continue  # nothing is being generated
            try:
                body = _parse(raw, limit)
                turn = await _start(websocket, conversation_id, body)
            except StarchartError as exc:
                await websocket.send_json(_error_frame(exc))
                continue
            await _stream_turn(websocket, turn, pending)


def _is_stop(raw: str) -> bool:
    try:
        frame = json.loads(raw)
    except ValueError:
        return False
    return isinstance(frame, dict) and frame.get("type") == "stop"


async def _stream_turn(websocket: WebSocket, turn: Turn, pending: list[str]) -> None:
    """Send one turn's frames while listening for stop, disconnect or the next message."""
    listener = asyncio.ensure_future(websocket.receive_text())
    events = turn.events()
    step: asyncio.Future[Any] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(events))
            while not step.done():
                await asyncio.wait({step, listener}, return_when=asyncio.FIRST_COMPLETED)
                if listener.done():
                    raw = listener.result()  # raises WebSocketDisconnect if the client left
                    if _is_stop(raw):
                        turn.stop()
                    else:
                        pending.append(raw)  # the next message, once this reply is done
                    listener = asyncio.ensure_future(websocket.receive_text())
            try:
                event = step.result()
            except StopAsyncIteration:  # stopped before the end: say so, it is stored
                await websocket.send_json({
                    "type": "done", "finish_reason": "cancelled", "usage": None,
                    "message_id": turn.message_id, "dropped_turns": turn.dropped_turns})
                return
            except StarchartError as exc:
                await websocket.send_json(_error_frame(exc))
                return
            if isinstance(event, TextDelta):
                await websocket.send_json({"type": "delta", "content": event.text})
            elif isinstance(event, Finish):
                await websocket.send_json({
                    "type": "done", "finish_reason": event.reason,
                    "usage": event.usage.as_dict(), "message_id": turn.message_id,
                    "dropped_turns": turn.dropped_turns})
                return
    finally:
        if listener.done() and not listener.cancelled() and listener.exception() is None:
            pending.append(listener.result())
        listener.cancel()
        if step is not None and not step.done():
            step.cancel()
            await asyncio.wait({step})
        await events.aclose()  # stops generation if the reply is not complete
