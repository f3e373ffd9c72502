"""OpenAI wire models: every request is validated here, nowhere else.

Sampling fields left out of a request are ``None`` and take the server's
defaults (settings), so one request can override any subset.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from starchart.engines.base import SamplingParams
from starchart.engines.base import TokenLogprob as EngineLogprob
from starchart.engines.base import Usage as EngineUsage
from starchart.errors import BadRequest, StarchartError

Role = Literal["system", "developer", "user", "assistant", "tool"]

# -- the field types every request model uses ----------------------------------------------

# A lone UTF-16 surrogate ("\ud800") is valid JSON but not Unicode text: it cannot be
# encoded for a tokenizer or a database, so it is refused here, naming the field.
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ERROR = ("contains a lone UTF-16 surrogate (such as \\ud800), which is not"
                    " valid Unicode text")


def _text(value: str) -> str:
    if _SURROGATE.search(value):
        raise ValueError(_SURROGATE_ERROR)
    return value


def _json_text(value: Any) -> Any:
    """Every string (keys too) inside a JSON value must be valid Unicode text."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _text(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


# Text: a JSON string (never a number or a bool) that is valid Unicode.
Text = Annotated[StrictStr, AfterValidator(_text)]
# Any JSON value (a JSON schema, tool parameters) whose strings are valid Unicode.
JsonValue = Annotated[Any, AfterValidator(_json_text)]
# Numbers are strict: "0.5" and true are not numbers. An int is a valid float;
# NaN and infinities (which Python's JSON parser lets through) are not.
Float = Annotated[StrictFloat, Field(allow_inf_nan=False)]
Int = StrictInt
INT64_MAX = 2**63 - 1
# The most messages one request (or one imported conversation) may carry.
MAX_MESSAGES = 10_000
MAX_STOP_CHARS = 1_000
# The most alternatives per token that top_logprobs (and completions' logprobs) return.
MAX_TOP_LOGPROBS = 20


class TextPart(BaseModel):
    type: Literal["text"]
    text: Text


class CalledFunction(BaseModel):
    name: Text
    arguments: Text


class MessageToolCall(BaseModel):
    """A call an earlier assistant turn made (in the history sent back)."""

    id: Text
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Role
    # None only for an assistant turn that made tool calls.
    content: Text | list[TextPart] | None = None
    name: Text | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: Text | None = None

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
    name: Text = "response"
    description: Text | None = None
    # Any JSON here: a schema that is not an object is refused with a 400 naming it.
    json_schema: JsonValue = Field(None, alias="schema")
    strict: StrictBool | None = None


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
    name: Annotated[StrictStr, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: Text = ""
    parameters: JsonValue = None
    strict: StrictBool | None = None


class ToolDefinition(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: Text


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


# An OpenAI field that would change the answer and that starchart's own engines do not
# implement: a value (other than null or an empty {} / []) is a 400 naming it
# (``check_supported``), not silently ignored. A model relayed to an upstream server
# gets the request as sent, these fields included: the upstream may implement them.
Unsupported = Annotated[JsonValue, Field(description="Not supported by starchart's own"
                                                     " engines: a value other than null (or"
                                                     " an empty object or list) is a 400.")]
UNSUPPORTED = ("logit_bias", "functions", "function_call", "audio", "prediction",
               "web_search_options")
StopString = Annotated[Text, Field(max_length=MAX_STOP_CHARS)]


class SamplingFields(BaseModel):
    """The generation parameters shared by chat and text completions."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    model: Text | None = None
    temperature: Float | None = Field(None, ge=0, le=2)
    top_p: Float | None = Field(None, gt=0, le=1)
    top_k: Int | None = Field(None, ge=0, le=2**31 - 1)
    min_p: Float | None = Field(None, ge=0, le=1)
    max_tokens: Int | None = Field(
        None, ge=1, le=INT64_MAX,
        validation_alias=AliasChoices("max_tokens", "max_new_tokens", "max_completion_tokens"),
        description="At most this many tokens; more than the context window leaves after the"
                    " prompt is clamped to that room (the answer then ends with"
                    " finish_reason length).")
    repetition_penalty: Float | None = Field(None, gt=0, le=100)
    presence_penalty: Float | None = Field(None, ge=-2, le=2)
    frequency_penalty: Float | None = Field(None, ge=-2, le=2)
    seed: Int | None = Field(None, ge=-(2**63), le=INT64_MAX)
    stop: StopString | Annotated[list[StopString], Field(max_length=16)] | None = None
    n: Int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    ignore_eos: StrictBool = False
    logit_bias: Unsupported = None
    functions: Unsupported = None
    function_call: Unsupported = None
    audio: Unsupported = None
    prediction: Unsupported = None
    web_search_options: Unsupported = None
    modalities: list[Literal["text"]] | None = Field(
        None, description="Only text: any other modality is a 400.")

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
        return defaults.replace(**given, stop=stop, ignore_eos=self.ignore_eos,
                                logprobs=self.wanted_logprobs)

    def check_supported(self) -> None:
        """Refuse what only an upstream server could do (called for starchart's own engines)."""
        for name in UNSUPPORTED:
            if getattr(self, name) not in (None, {}, []):
                raise BadRequest(f"invalid value for {name!r}: not supported by this server"
                                 " (refused rather than ignored)", param=name)

    @property
    def wanted_logprobs(self) -> int | None:
        """How many alternatives per token the answer's logprobs carry (None: no logprobs)."""
        return None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ToolFields(BaseModel):
    """Structured output and tools: a chat completion's and a conversation turn's."""

    response_format: ResponseFormat | None = None
    tools: Annotated[list[ToolDefinition], Field(max_length=128)] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool = True


class ChatCompletionRequest(ToolFields, SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    logprobs: StrictBool = Field(False, description="Return each answer token's log"
                                                    " probability (choices[].logprobs).")
    top_logprobs: Int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS,
        description="With logprobs: this many most likely alternatives for each token.")

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    @property
    def wanted_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


PromptText = Annotated[Text, Field(min_length=1)]


class CompletionRequest(SamplingFields):
    prompt: PromptText | Annotated[list[PromptText], Field(min_length=1, max_length=1)]
    echo: Literal[False] = False
    suffix: None = None
    best_of: Int = Field(1, ge=1, le=1, description="Only 1 is supported.")
    logprobs: Int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS,
        description="Return each token's log probability and this many most likely"
                    " alternatives (choices[].logprobs, the legacy completions shape).")

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def wanted_logprobs(self) -> int | None:
        return self.logprobs


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


class TopLogprob(WireModel):
    token: str
    logprob: float
    bytes: list[int] | None = Field(description="The token's UTF-8 bytes (a token may hold"
                                                " part of a character).")


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(description="The most likely tokens at this"
                                                       " position (top_logprobs of them).")

    @classmethod
    def of(cls, entry: EngineLogprob) -> TokenLogprob:
        return cls(**_top(entry.token, entry.logprob).model_dump(),
                   top_logprobs=[_top(token, logprob) for token, logprob in entry.top])


def _top(token: bytes, logprob: float) -> TopLogprob:
    return TopLogprob(token=token.decode("utf-8", errors="replace"), logprob=logprob,
                      bytes=list(token))


class ChoiceLogprobs(WireModel):
    content: list[TokenLogprob] | None
    refusal: None = None

    @classmethod
    def of(cls, entries: Sequence[EngineLogprob]) -> ChoiceLogprobs:
        return cls(content=[TokenLogprob.of(e) for e in entries])


class CompletionLogprobs(WireModel):
    """The legacy /v1/completions shape: parallel lists, one item per token."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]

    @classmethod
    def of(cls, entries: Sequence[EngineLogprob], offset: int = 0) -> CompletionLogprobs:
        tokens = [e.token.decode("utf-8", errors="replace") for e in entries]
        offsets = []
        for token in tokens:
            offsets.append(offset)
            offset += len(token)
        return cls(tokens=tokens, token_logprobs=[e.logprob for e in entries],
                   top_logprobs=[{t.decode("utf-8", errors="replace"): lp for t, lp in e.top}
                                 for e in entries],
                   text_offset=offsets)


class ChatChoice(WireModel):
    index: int = 0
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str
    message: AssistantMessage


class CompletionResponse(WireModel):
    """The fields every completion body and chunk starts with."""

    id: str
    object: str
    created: int
    model: str
    system_fingerprint: None = None


class ChatCompletion(CompletionResponse):
    object: Literal["chat.completion"] = "chat.completion"
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
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(CompletionResponse):
    """One SSE frame of a streamed chat completion. ``usage`` is there (null
    until the last, choice-less chunk) only when ``stream_options.include_usage``."""

    omittable = frozenset({"usage"})

    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionChoice(WireModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class Completion(CompletionResponse):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunk(Completion):
    omittable = frozenset({"usage"})

    usage: Usage | None = None  # type: ignore[assignment]


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
