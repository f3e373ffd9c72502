"""/v1/conversations: create, list, read, rename, delete and export stored chats.

A conversation belongs to the API key that created it (``request.state.api_key_id``,
set by ``api/auth.py``); any other key gets the same 404 as for an id that
does not exist. Its turns are ``conversation_messages.py``'s.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.requests import HTTPConnection

from starchart.api.auth import key_id
from starchart.api.conversation_protocol import (
    LIST_LIMIT_MAX,
    Conversation,
    ConversationCreate,
    ConversationDeleted,
    ConversationList,
    ConversationSummary,
    ConversationUpdate,
    ExportFormat,
    page_cursor,
    parse_cursor,
)
from starchart.api.export import to_json, to_markdown
from starchart.api.openapi import errors
from starchart.store import Store

router = APIRouter()
NOT_FOUND = errors(404)


def _store(conn: HTTPConnection) -> Store:
    store: Store = conn.app.state.store
    return store


@router.post("/v1/conversations", response_model=Conversation,
             response_model_exclude_unset=True, responses=NOT_FOUND)
async def create_conversation(request: Request,
                              body: ConversationCreate | None = None) -> Conversation:
    body = body or ConversationCreate()
    if body.model is not None:
        request.app.state.service.served(body.model)
    imported: list[tuple[str, str]] = [(m.role, m.content) for m in body.messages or []]
    conv = await asyncio.to_thread(
        _store(request).conversations.create, key_id(request), title=body.title,
        system_prompt=body.system_prompt, model=body.model, messages_=imported)
    return Conversation.of(conv)


@router.get("/v1/conversations", response_model=ConversationList,
            response_model_exclude_unset=True, responses=errors(400))
async def list_conversations(
        request: Request, limit: int = Query(LIST_LIMIT_MAX, ge=1, le=LIST_LIMIT_MAX),
        after: str | None = Query(None, max_length=200, description=(
            "A page's next_cursor: the page after it.")),
        search: str | None = Query(None, max_length=200, description=(
            "Only conversations whose title or any message contains this text"
            " (case-insensitive)."))) -> ConversationList:
    """Summaries (no system prompt, no messages), most recently updated first, a page of
    at most ``limit``; ``has_more`` and ``next_cursor`` lead to the next page."""
    start = parse_cursor(after) if after else None
    convs = await asyncio.to_thread(_store(request).conversations.list, key_id(request),
                                    limit=limit + 1, search=search or None, after=start)
    page = convs[:limit]
    more = len(convs) > limit
    return ConversationList(data=[ConversationSummary.of(c) for c in page], has_more=more,
                            next_cursor=page_cursor(page[-1]) if more else None)


@router.get("/v1/conversations/{conversation_id}", response_model=Conversation,
            response_model_exclude_unset=True, responses=NOT_FOUND)
async def get_conversation(conversation_id: str, request: Request) -> Conversation:
    conv = await asyncio.to_thread(_store(request).conversations.get, conversation_id,
                                   key_id(request))
    return Conversation.of(conv)


@router.patch("/v1/conversations/{conversation_id}", response_model=Conversation,
              response_model_exclude_unset=True, responses=NOT_FOUND)
async def update_conversation(conversation_id: str, body: ConversationUpdate,
                              request: Request) -> Conversation:
    # Only the fields sent change; "system_prompt": null goes back to the server default.
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    conv = await asyncio.to_thread(_store(request).conversations.update, conversation_id,
                                   key_id(request), **changes)
    return Conversation.of(conv)


@router.delete("/v1/conversations/{conversation_id}", response_model=ConversationDeleted,
               responses=NOT_FOUND)
async def delete_conversation(conversation_id: str, request: Request) -> ConversationDeleted:
    await asyncio.to_thread(_store(request).conversations.delete, conversation_id,
                            key_id(request))
    return ConversationDeleted(id=conversation_id)


@router.get("/v1/conversations/{conversation_id}/export", response_class=Response,
            responses={**NOT_FOUND, 200: {"description": "The conversation as a file",
                                          "content": {"application/json": {},
                                                      "text/markdown": {}}}})
async def export_conversation(conversation_id: str, request: Request,
                              format: ExportFormat = "json") -> Response:
    conv = await asyncio.to_thread(_store(request).conversations.get, conversation_id,
                                   key_id(request))
    if format == "markdown":
        body, media, ext = to_markdown(conv), "text/markdown; charset=utf-8", "md"
    else:
        body, media, ext = to_json(conv), "application/json", "json"
    return Response(body, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{conversation_id}.{ext}"'})
