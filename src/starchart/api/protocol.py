"""OpenAI wire models: every request is validated here, nowhere else.

Sampling fields left out of a request are ``None`` and take the server's
defaults (settings), so one request can override any subset.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    field_validator,
    model_validator,
)

from starchart.engines.base import SamplingParams
from starchart.engines.base import Usage as EngineUsage
from starchart.errors import StarchartError

Role = Literal["system", "developer", "user", "assistant", "tool"]


class TextPart(BaseModel):
    type: Literal["text"]
    text: StrictStr


class CalledFunction(BaseModel):
    name: StrictStr
    arguments: StrictStr


class MessageToolCall(BaseModel):
    """A call an earlier assistant turn made (in the history sent back)."""

    id: StrictStr
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Role
    # None only for an assistant turn that made tool calls.
    content: StrictStr | list[TextPart] | None = None
    name: StrictStr | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: StrictStr | None = None

    @model_validator(mode="after")
    def _roles(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id (the call it answers)")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (only an assistant turn with tool_calls"
                             " may leave it out)")
        return self

    def as_template_message(self) -> dict[str, Any]:
        content = (self.content if isinstance(self.content, str) or self.content is None
                   else "".join(part.text for part in self.content))
        # Templates know "system"; OpenAI's newer "developer" role means the same.
        role = "system" if self.role == "developer" else self.role
        out: dict[str, Any] = {"role": role, "content": content or ""}
        if self.tool_calls:
            out["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        return out


class JsonSchemaFormat(BaseModel):
    name: StrictStr = "response"
    description: StrictStr | None = None
    # Any JSON here: a schema that is not an object is refused with a 400 naming it.
    json_schema: Any = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormatText(BaseModel):
    type: Literal["text"]


class ResponseFormatJsonObject(BaseModel):
    type: Literal["json_object"]


class ResponseFormatJsonSchema(BaseModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[ResponseFormatText | ResponseFormatJsonObject
                           | ResponseFormatJsonSchema, Field(discriminator="type")]


class FunctionDefinition(BaseModel):
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: StrictStr = ""
    parameters: Any = None
    strict: bool | None = None


class ToolDefinition(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: StrictStr


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(BaseModel):
    """The generation parameters shared by chat and text completions."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    model: StrictStr | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(
        None, ge=1,
        validation_alias=AliasChoices("max_tokens", "max_new_tokens", "max_completion_tokens"),
    )
    repetition_penalty: float | None = Field(None, gt=0)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=16)] | None = None
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        items = [value] if isinstance(value, str) else (value or [])
        if any(not s for s in items):
            raise ValueError("stop strings must not be empty")
        return value

    def sampling(self, defaults: SamplingParams) -> SamplingParams:
        given = {
            name: getattr(self, name)
            for name in ("temperature", "top_p", "top_k", "min_p", "max_tokens",
                         "repetition_penalty", "presence_penalty", "frequency_penalty", "seed")
            if getattr(self, name) is not None
        }
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return defaults.replace(**given, stop=stop, ignore_eos=self.ignore_eos)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    response_format: ResponseFormat | None = None
    tools: Annotated[list[ToolDefinition], Field(max_length=128)] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True


class CompletionRequest(SamplingFields):
    prompt: StrictStr | Annotated[list[StrictStr], Field(min_length=1, max_length=1)]
    echo: Literal[False] = False
    suffix: None = None

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


# -- responses ----------------------------------------------------------------------------


class WireModel(BaseModel):
    """A body the server sends, serialised with ``exclude_unset``.

    Every field is on the wire, nulls included (as OpenAI sends them), except
    those named in ``omittable``: they appear only when given.
    """

    omittable: ClassVar[frozenset[str]] = frozenset()

    def model_post_init(self, context: Any, /) -> None:
        self.model_fields_set.update(set(type(self).model_fields) - self.omittable)

    def wire(self) -> str:
        return self.model_dump_json(exclude_unset=True)


class MemoryFigures(WireModel):
    """Why a model does not fit (code ``memory_budget_exceeded``), in bytes."""

    needed: int
    budget: int
    loaded: int


class ErrorDetail(WireModel):
    omittable = frozenset({"memory"})

    message: str
    type: str
    param: str | None
    code: str | None
    memory: MemoryFigures | None = None


class ErrorResponse(WireModel):
    """Every 4xx/5xx body, and the SSE frame of an error mid-stream."""

    error: ErrorDetail

    @classmethod
    def of(cls, exc: StarchartError) -> ErrorResponse:
        memory = getattr(exc, "memory", None)
        return cls(error=ErrorDetail(message=exc.message, type=exc.type, param=exc.param,
                                     code=exc.code, **({"memory": MemoryFigures(**memory)}
                                                        if memory else {})))


class Usage(WireModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, usage: EngineUsage) -> Usage:
        return cls(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                   total_tokens=usage.total_tokens)


class FunctionCall(WireModel):
    name: str
    arguments: str  # JSON text matching the tool's parameters


class ToolCall(WireModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(WireModel):
    omittable = frozenset({"tool_calls"})

    role: Literal["assistant"] = "assistant"
    # null when the reply is tool calls
    content: str | None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(WireModel):
    index: int = 0
    logprobs: None = None
    finish_reason: str
    message: AssistantMessage


class ChatCompletion(WireModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[ChatChoice]
    usage: Usage


class FunctionCallDelta(WireModel):
    omittable = frozenset({"name"})

    name: str | None = None
    arguments: str


class ToolCallDelta(WireModel):
    """A piece of a streamed call: the first names it (id, type, function.name),
    the next ones carry its arguments."""

    omittable = frozenset({"id", "type"})

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class Delta(WireModel):
    omittable = frozenset({"role", "content", "tool_calls"})

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(WireModel):
    index: int = 0
    delta: Delta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(WireModel):
    """One SSE frame of a streamed chat completion. ``usage`` is there (null
    until the last, choice-less chunk) only when ``stream_options.include_usage``."""

    omittable = frozenset({"usage"})

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionChoice(WireModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: str | None = None


class Completion(WireModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunk(WireModel):
    omittable = frozenset({"usage"})

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[CompletionChoice]
    usage: Usage | None = None


ModelState = Literal["loaded", "loading", "unloaded", "failed"]


class ModelCard(WireModel):
    """A row of ``GET /v1/models``; the engine's own facts follow the OpenAI fields."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "starchart"
    kind: Literal["chat", "clip"]
    loaded: bool
    # loaded, loading, unloaded (--load-on-demand, --keep-alive, POST .../unload), or failed.
    state: ModelState
    # What the model takes once loaded, by the planner's estimate (weights + KV cache x
    # --parallel + buffers); what --memory-budget counts. None: unknown.
    memory_bytes: int | None
    load_error: str | None = None
    omittable = frozenset({"load_error"})


class ModelList(WireModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ModelStateChange(WireModel):
    """``POST /v1/models/{name}/load`` and ``/unload``: the model's state afterwards."""

    object: Literal["model.state"] = "model.state"
    id: str
    state: ModelState
    memory_bytes: int | None
    # Models unloaded to make room for this one (least recently used first).
    unloaded: list[str] = []
    load_seconds: float | None = None


class GenerationDefaults(WireModel):
    # Built from SamplingParams: a field added there must be added here (forbid says so).
    model_config = ConfigDict(extra="forbid")

    temperature: float
    top_p: float
    top_k: int
    min_p: float
    max_tokens: int
    repetition_penalty: float
    presence_penalty: float
    frequency_penalty: float
    seed: int | None
    stop: list[str]
    ignore_eos: bool
    system_prompt: str


class SequenceStats(WireModel):
    running: int
    queued: int
    parallel: int
    reused_tokens: int


class ServerStats(WireModel):
    model_config = ConfigDict(extra="forbid")

    requests_in_flight: int
    requests_total: int
    completion_tokens_total: int
    last_tokens_per_second: float | None
    # Per model, from engines that batch sequences (llama.cpp).
    models: dict[str, SequenceStats] = {}



class Health(WireModel):
    status: Literal["ok"] = "ok"


class Readiness(WireModel):
    """``/ready``: every configured model (chat and CLIP) and whether it is loaded."""

    omittable = frozenset({"error"})

    status: Literal["ready", "loading", "error"]
    models: dict[str, bool]
    error: str | None = None
