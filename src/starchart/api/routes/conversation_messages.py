"""A stored conversation's turns: POST .../messages (SSE by default) and .../ws.

Generation goes through ``services.conversations`` (and so the chat service):
the user message and the reply are stored as they happen.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from starlette.requests import HTTPConnection

from starchart.api import generation
from starchart.api import websocket as ws
from starchart.api.auth import WS_SUBPROTOCOL, key_id
from starchart.api.bodies import parse_json
from starchart.api.conversation_protocol import (
    ConversationChunk,
    ConversationMessage,
    ConversationTurn,
    MessageCreate,
    MessageDeleted,
    TurnInfo,
    WsError,
)
from starchart.api.openapi import errors, streams
from starchart.api.streaming import cancel_on_disconnect
from starchart.api.structured import structured_request
from starchart.errors import NotFound, PayloadTooLarge, StarchartError
from starchart.services.conversations import ConversationChat, Turn

router = APIRouter()


async def _start(conn: HTTPConnection, conversation_id: str, body: MessageCreate) -> Turn:
    body.check_supported()
    defaults = conn.app.state.service.defaults
    chat: ConversationChat = conn.app.state.conversation_chat
    return await chat.start(
        conversation_id, key_id(conn), body.content, body.sampling(defaults), body.model,
        replace=body.replace, structured=structured_request(body), continue_=body.continue_)


def _info(turn: Turn) -> TurnInfo:
    return TurnInfo(conversation_id=turn.conversation_id, message_id=turn.message_id,
                    user_message_id=turn.user_message.id, dropped_turns=turn.dropped_turns,
                    prompt_tokens=turn.prompt_tokens, continued=turn.continued)


@router.post("/v1/conversations/{conversation_id}/messages", response_model=ConversationTurn,
             responses={**streams(ConversationChunk), **errors(400, 404, 503)})
async def post_message(conversation_id: str, body: MessageCreate,
                       request: Request) -> ConversationTurn | StreamingResponse:
    """Append the user turn, generate the reply (streamed by default) and store it.

    ``continue: true`` instead goes on with the last answer and extends it.
    """
    turn = await _start(request, conversation_id, body)
    info = _info(turn)
    if body.stream:
        return generation.stream(turn.events(), generation.TurnChunks(turn.model, info))
    message = ConversationMessage.of(await cancel_on_disconnect(request, turn.result()))
    return ConversationTurn(**info.model_dump(), message=message, usage=message.usage)


@router.delete("/v1/conversations/{conversation_id}/messages/{message_id}",
               response_model=MessageDeleted, responses=errors(404))
async def delete_message(conversation_id: str, message_id: str,
                         request: Request) -> MessageDeleted:
    """Remove one stored message (the rest of the conversation stays as it is)."""
    await asyncio.to_thread(request.app.state.store.conversations.delete_message,
                            conversation_id, key_id(request), message_id)
    return MessageDeleted(id=message_id)


def _parse(raw: str, limit: int) -> MessageCreate:
    if len(raw.encode("utf-8")) > limit:
        raise PayloadTooLarge(f"the message is larger than the limit of {limit} bytes"
                              " (setting max_body_bytes)")
    return parse_json(MessageCreate, raw)


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
        await asyncio.to_thread(websocket.app.state.store.conversations.get, conversation_id,
                                key_id(websocket), with_messages=False)
    except StarchartError as exc:
        await ws.send(websocket, WsError.of(exc))
        await websocket.close(code=4404 if isinstance(exc, NotFound) else 1011)
        return
    pending: list[str] = []
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            raw = pending.pop(0) if pending else await websocket.receive_text()
            if ws.is_stop(raw):
                continue  # nothing is being generated
            try:
                turn = await _start(websocket, conversation_id, _parse(raw, limit))
            except StarchartError as exc:
                await ws.send(websocket, WsError.of(exc))
                continue
            await ws.stream_turn(websocket, turn, _info(turn), pending)
