"""Engine events -> typed OpenAI responses, for chat and text completions alike.

A streamed reply is a ``Chunks`` object turning each event into the chunk
model of its endpoint; ``stream`` frames them as server-sent events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from fastapi import Request

from starchart.api.conversation_protocol import ConversationChunk, QueueStatus, TurnInfo
from starchart.api.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChoiceLogprobs,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    Delta,
    FunctionCall,
    FunctionCallDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    WireModel,
    new_id,
    now,
)
from starchart.api.streaming import EventStream, cancel_on_disconnect, sse_response
from starchart.engines.base import Finish, StreamEvent, TextDelta, TokenLogprob
from starchart.services.chat import collect
from starchart.services.conversations import Queued, TurnEvent
from starchart.structured import tools
from starchart.structured.replies import ReplyEvent

C = TypeVar("C", bound=WireModel)


class Chunks(Generic[C]):
    """The chunks of one streamed reply: one id and creation time for all of them."""

    prefix = "chatcmpl"

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id, self.created, self.model = new_id(self.prefix), now(), model
        self.include_usage = include_usage

    def first(self) -> C | None:
        return None

    def text(self, text: str, logprobs: tuple[TokenLogprob, ...] = ()) -> C:
        """A piece of the answer; ``logprobs``, when asked for, of the tokens it covers."""
        raise NotImplementedError

    def finish(self, reason: str) -> C:
        raise NotImplementedError

    def usage(self, usage: Usage) -> C:
        raise NotImplementedError

    def queued(self, position: int | None) -> C:
        raise NotImplementedError  # only a stored conversation's turn waits visibly


class ChatChunks(Chunks[ChatCompletionChunk]):
    kind: type[ChatCompletionChunk] = ChatCompletionChunk

    def _chunk(self, delta: Delta, finish: str | None = None,
               logprobs: ChoiceLogprobs | None = None, **extra: object) -> ChatCompletionChunk:
        choice = ChunkChoice(delta=delta, logprobs=logprobs, finish_reason=finish)
        chunk = self.kind(id=self.id, created=self.created, model=self.model,
                          choices=[choice], **extra)
        if self.include_usage:
            chunk.usage = None
        return chunk

    def first(self) -> ChatCompletionChunk:
        return self._chunk(Delta(role="assistant", content=""))

    def text(self, text: str, logprobs: tuple[TokenLogprob, ...] = ()) -> ChatCompletionChunk:
        return self._chunk(Delta(content=text),
                           logprobs=ChoiceLogprobs.of(logprobs) if logprobs else None)

    def finish(self, reason: str) -> ChatCompletionChunk:
        return self._chunk(Delta(), reason)

    def tool_call(self, delta: tools.ToolCallDelta) -> ChatCompletionChunk:
        piece = ToolCallDelta(index=delta.index,
                              function=FunctionCallDelta(arguments=delta.arguments))
        if delta.name is not None:
            piece = ToolCallDelta(index=delta.index, id=delta.id, type="function",
                                  function=FunctionCallDelta(name=delta.name,
                                                             arguments=delta.arguments))
        return self._chunk(Delta(tool_calls=[piece]))

    def usage(self, usage: Usage) -> ChatCompletionChunk:
        return self.kind(id=self.id, created=self.created, model=self.model, choices=[],
                         usage=usage)


class TurnChunks(ChatChunks):
    """A stored conversation's turn: its first chunk names the messages it writes."""

    kind = ConversationChunk

    def __init__(self, model: str, turn: TurnInfo) -> None:
        super().__init__(model, include_usage=True)
        self.turn = turn

    def first(self) -> ChatCompletionChunk:
        return self._chunk(Delta(role="assistant", content=""), starchart=self.turn)

    def queued(self, position: int | None) -> ChatCompletionChunk:
        return ConversationChunk(id=self.id, created=self.created, model=self.model,
                                 choices=[], queue=QueueStatus(position=position))


class CompletionChunks(Chunks[CompletionChunk]):
    prefix = "cmpl"
    offset = 0  # characters of text sent so far (logprobs' text_offset)

    def _chunk(self, text: str, finish: str | None = None,
               logprobs: CompletionLogprobs | None = None) -> CompletionChunk:
        choice = CompletionChoice(text=text, logprobs=logprobs, finish_reason=finish)
        chunk = CompletionChunk(id=self.id, created=self.created, model=self.model,
                                choices=[choice])
        if self.include_usage:
            chunk.usage = None
        return chunk

    def text(self, text: str, logprobs: tuple[TokenLogprob, ...] = ()) -> CompletionChunk:
        entries = CompletionLogprobs.of(logprobs, self.offset) if logprobs else None
        self.offset += len(text)
        return self._chunk(text, logprobs=entries)

    def finish(self, reason: str) -> CompletionChunk:
        return self._chunk("", reason)

    def usage(self, usage: Usage) -> CompletionChunk:
        return CompletionChunk(id=self.id, created=self.created, model=self.model,
                               choices=[], usage=usage)


async def _chunks(events: AsyncIterator[TurnEvent], chunks: Chunks[C]) -> AsyncIterator[C]:
    first = chunks.first()
    if first is not None:
        yield first
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                yield chunks.text(event.text, event.logprobs)
            elif isinstance(event, tools.ToolCallDelta):
                yield chunks.tool_call(event)  # type: ignore[attr-defined]
            elif isinstance(event, Finish):
                yield chunks.finish(event.reason)
                if chunks.include_usage:
                    yield chunks.usage(Usage.of(event.usage))
            elif isinstance(event, Queued):
                yield chunks.queued(event.position)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def stream(events: AsyncIterator[TurnEvent], chunks: Chunks[C]) -> EventStream:
    typed: AsyncIterator[C] = _chunks(events, chunks)
    return sse_response(typed)


async def _collect_calls(events: AsyncIterator[ReplyEvent]
                         ) -> tuple[AssistantMessage, Finish, list[TokenLogprob]]:
    text: list[str] = []
    logprobs: list[TokenLogprob] = []
    calls: list[ToolCall] = []
    finish: Finish | None = None
    async for event in events:
        if isinstance(event, TextDelta):
            text.append(event.text)
            logprobs.extend(event.logprobs)
        elif isinstance(event, tools.ToolCallDelta):
            if event.name is not None:
                calls.append(ToolCall(id=event.id or tools.new_call_id(),
                                      function=FunctionCall(name=event.name, arguments="")))
            calls[event.index].function.arguments += event.arguments
        else:
            finish = event
    assert finish is not None, "an engine stream always ends with Finish"
    if calls:
        message = AssistantMessage(content="".join(text) or None, tool_calls=calls)
        return message, finish, logprobs
    return AssistantMessage(content="".join(text)), finish, logprobs


async def chat_completion(request: Request, events: AsyncIterator[ReplyEvent],
                          model: str, *, logprobs: bool = False) -> ChatCompletion:
    """``logprobs``: the request asked for them (choices[].logprobs is then filled)."""
    message, finish, entries = await cancel_on_disconnect(request, _collect_calls(events))
    choice = ChatChoice(finish_reason=finish.reason, message=message,
                        logprobs=ChoiceLogprobs.of(entries) if logprobs else None)
    return ChatCompletion(id=new_id("chatcmpl"), created=now(), model=model, choices=[choice],
                          usage=Usage.of(finish.usage))


async def completion(request: Request, events: AsyncIterator[StreamEvent],
                     model: str, *, logprobs: bool = False) -> Completion:
    reply = await cancel_on_disconnect(request, collect(events))
    choice = CompletionChoice(text=reply.text, finish_reason=reply.finish.reason,
                              logprobs=CompletionLogprobs.of(reply.logprobs) if logprobs
                              else None)
    return Completion(id=new_id("cmpl"), created=now(), model=model, choices=[choice],
                      usage=Usage.of(reply.finish.usage))
