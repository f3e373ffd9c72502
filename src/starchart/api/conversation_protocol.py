"""Wire models of the conversation API (/v1/conversations...).

Kept beside ``protocol.py`` (and reusing its ``SamplingFields``) rather than in
it, so the conversation store can be merged without touching that module.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
)

from starchart.api.protocol import (
    MAX_MESSAGES,
    ChatCompletionChunk,
    ErrorDetail,
    ErrorResponse,
    SamplingFields,
    Text,
    ToolCall,
    ToolFields,
    Usage,
    WireModel,
)
from starchart.engines.base import Finish
from starchart.errors import BadRequest, StarchartError
from starchart.store.conversations import Conversation as StoredConversation
from starchart.store.conversations import StoredMessage

# What a stored text field may hold, in characters (README "Input limits").
TITLE_MAX = 500
SYSTEM_PROMPT_MAX = 100_000
CONTENT_MAX = 200_000
LIST_LIMIT_MAX = 100

Title = Annotated[Text, Field(max_length=TITLE_MAX)]
SystemPrompt = Annotated[Text, Field(max_length=SYSTEM_PROMPT_MAX)]
Content = Annotated[Text, Field(max_length=CONTENT_MAX)]


class ImportedMessage(BaseModel):
    """A message of a conversation brought in from elsewhere (an exported file)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: Content


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    system_prompt: SystemPrompt | None = None
    model: Text | None = None
    messages: Annotated[list[ImportedMessage], Field(max_length=MAX_MESSAGES)] | None = Field(
        None, description="Import: the conversation's messages so far, kept as given.")


class ConversationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    system_prompt: SystemPrompt | None = None


class MessageCreate(ToolFields, SamplingFields):
    """A user turn: its text plus any sampling field of /v1/chat/completions.

    ``regenerate: true`` instead of ``content`` answers the last user turn
    again, replacing the answer it had. ``replace`` (a user message's id) with
    ``content`` edits that turn: it and every later message are replaced by the
    new text and its answer. ``continue: true`` instead of ``content`` goes on
    with the last answer (one cut by ``max_tokens``, or stopped): no new user
    turn, the stored answer is extended.
    """

    # Before ``content``: its validator reads them.
    regenerate: StrictBool = False
    continue_: StrictBool = Field(
        False, alias="continue",
        description="Go on with the conversation's last answer instead of sending a new"
                    " message: the new text is appended to the stored answer.")
    replace: Text | None = Field(
        None, description="Edit: the id of a user message that, with every later message,"
                          " gives way to this content and its answer.")
    content: Content | None = Field(None, min_length=1, validate_default=True)
    stream: StrictBool = True

    @field_validator("content")
    @classmethod
    def _content_or_regenerate(cls, value: str | None, info: ValidationInfo) -> str | None:
        regenerate = info.data.get("regenerate", False)
        if info.data.get("continue_", False):
            if value is not None or regenerate or info.data.get("replace") is not None:
                raise ValueError("continue: true goes on with the last answer; it takes no"
                                 " content, regenerate or replace")
            return value
        if regenerate and value is not None:
            raise ValueError("give either content or regenerate: true, not both")
        if not regenerate and value is None:
            raise ValueError("content is required (or regenerate: true to answer the last"
                             " user turn again, or continue: true to go on with the last"
                             " answer)")
        if regenerate and info.data.get("replace") is not None:
            raise ValueError("replace edits a turn with new content; it cannot be combined"
                             " with regenerate: true")
        return value


ExportFormat = Literal["json", "markdown"]


# -- responses ----------------------------------------------------------------------------


class ReplyTimings(WireModel):
    """A reply's speed as the server measured it (stopped replies too)."""

    ttft_ms: float | None = Field(description="From the turn's start (queue included) to"
                                              " its first token.")
    queue_ms: float | None = Field(None, description="Of that, the time spent waiting in the"
                                                     " model's queue (engines with one).")
    prompt_tokens_per_second: float | None = Field(
        description="Prompt tokens over the time to first token, less the queue.")
    tokens_per_second: float | None = Field(
        description="Decode speed: tokens after the first over the time after it.")


class ConversationMessage(WireModel):
    id: str
    object: Literal["conversation.message"] = "conversation.message"
    role: str
    content: str
    created_at: int
    incomplete: bool
    finish_reason: str | None
    model: str | None
    params: dict[str, Any] | None
    usage: Usage | None
    dropped_turns: int | None
    timings: ReplyTimings | None = None
    tool_calls: list[ToolCall] | None = None

    @classmethod
    def of(cls, m: StoredMessage) -> ConversationMessage:
        return cls(id=m.id, role=m.role, content=m.content, created_at=int(m.created_at),
                   incomplete=m.incomplete, finish_reason=m.finish_reason, model=m.model,
                   params=m.params, usage=Usage.model_validate(m.usage) if m.usage else None,
                   dropped_turns=m.dropped_turns,
                   timings=ReplyTimings.model_validate(m.timings) if m.timings else None,
                   tool_calls=([ToolCall.model_validate(c) for c in m.tool_calls]
                               if m.tool_calls else None))


class ConversationSummary(WireModel):
    """A row of the conversation list: no system prompt, no messages."""

    id: str
    object: Literal["conversation"] = "conversation"
    title: str | None
    model: str | None
    created_at: int
    updated_at: int

    @classmethod
    def of(cls, conv: StoredConversation) -> ConversationSummary:
        return cls(id=conv.id, title=conv.title, model=conv.model,
                   created_at=int(conv.created_at), updated_at=int(conv.updated_at))


class Conversation(ConversationSummary):
    """A conversation, with its system prompt and messages."""

    system_prompt: str | None
    messages: list[ConversationMessage]

    @classmethod
    def of(cls, conv: StoredConversation) -> Conversation:
        return cls(**ConversationSummary.of(conv).model_dump(),
                   system_prompt=conv.system_prompt,
                   messages=[ConversationMessage.of(m) for m in conv.messages])


def page_cursor(conv: StoredConversation) -> str:
    """Where the next page starts: after this row (``updated_at`` and id, exactly)."""
    return f"{conv.updated_at!r}_{conv.id}"


def parse_cursor(cursor: str) -> tuple[float, str]:
    updated, _, conversation_id = cursor.partition("_")
    try:
        value = float(updated)
    except ValueError:
        value = float("nan")
    if not conversation_id or value != value:
        raise BadRequest(f"after: {cursor[:100]!r} is not a cursor from next_cursor",
                         param="after")
    return value, conversation_id


class ConversationList(WireModel):
    """One page of conversations, most recently updated first."""

    object: Literal["list"] = "list"
    data: list[ConversationSummary]
    has_more: bool
    next_cursor: str | None = Field(
        description="Pass as ?after= for the next page (null on the last page).")


class MessageDeleted(WireModel):
    id: str
    object: Literal["conversation.message.deleted"] = "conversation.message.deleted"
    deleted: Literal[True] = True


class ConversationDeleted(WireModel):
    id: str
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: Literal[True] = True


class TurnInfo(WireModel):
    """Which stored messages a turn wrote, and how much history the prompt left out."""

    conversation_id: str
    message_id: str
    user_message_id: str
    dropped_turns: int
    prompt_tokens: int = Field(description="The prompt's length in tokens (known before the"
                                           " first token: a client can show prompt speed).")
    continued: bool = Field(False, description="The turn goes on with the answer"
                                               " ``message_id`` (continue: true).")


class QueueStatus(WireModel):
    """Where a turn waits for the model before its first token (sent when it changes)."""

    position: int | None = Field(description="1 = the next to run; null = out of the queue"
                                             " (the model is reading the prompt).")


class ConversationChunk(ChatCompletionChunk):
    """A streamed turn's chunk; the first (the role chunk) also says which turn it is."""

    omittable = frozenset({"usage", "starchart", "queue"})

    starchart: TurnInfo | None = None
    queue: QueueStatus | None = Field(
        None, description="Only on chunks with no choices: the turn's place in the model's"
                          " queue changed.")


class ConversationTurn(WireModel):
    """A turn answered without streaming."""

    object: Literal["conversation.turn"] = "conversation.turn"
    conversation_id: str
    message_id: str
    user_message_id: str
    dropped_turns: int
    prompt_tokens: int
    continued: bool = False
    message: ConversationMessage
    usage: Usage | None


# WebSocket frames, server to client.


class WsDelta(WireModel):
    type: Literal["delta"] = "delta"
    content: str


class WsDone(WireModel):
    type: Literal["done"] = "done"
    finish_reason: str
    usage: Usage | None
    message_id: str
    dropped_turns: int

    @classmethod
    def of(cls, finish: Finish | None, info: TurnInfo) -> WsDone:
        """``finish`` None: the turn was stopped before its end (what was said is stored)."""
        return cls(finish_reason=finish.reason if finish else "cancelled",
                   usage=Usage.of(finish.usage) if finish else None,
                   message_id=info.message_id, dropped_turns=info.dropped_turns)


class WsQueue(WireModel):
    """The turn's place in the model's queue changed (before its first token)."""

    type: Literal["queue"] = "queue"
    position: int | None


class WsError(WireModel):
    type: Literal["error"] = "error"
    error: ErrorDetail

    @classmethod
    def of(cls, exc: StarchartError) -> WsError:
        return cls(error=ErrorResponse.of(exc).error)
