"""One turn of a stored conversation: the service's stream, persisted as it goes.

What the HTTP route, the WebSocket and the terminal chat all go through:

1. Turns on one conversation are serialised (``ConversationStore.turn_lock``,
   held from the user message to the end of the reply, across replicas on
   PostgreSQL); different conversations run side by side.
2. The history is fitted into the context window (``context.fit``), then the
   user message is committed, then an assistant message is created, marked
   incomplete, with the system prompt and parameters used. All before the
   first token.
3. Generation runs in its own task, not in the request's: the reply's text is
   written to its row every ``FLUSH_SECONDS`` (so a killed server leaves a
   readable partial reply, still marked incomplete), and the final text and
   usage are committed before the client sees the finish chunk.
4. When the reader goes away (client disconnect, Ctrl-C) generation stops, as
   it does for ``/v1/chat/completions``: the text generated so far is stored,
   marked incomplete with finish reason ``cancelled``.

A turn may instead continue the last answer (``continue_``): no user message
is added, the model goes on from the answer's text and the new text is
appended to the stored answer. Until its first token a turn reports where it
waits in the model's queue (``Queued``), when the engine has one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from starchart.engines.base import (
    QUEUE_WATCH,
    Engine,
    Finish,
    QueueWatch,
    SamplingParams,
    TextDelta,
)
from starchart.errors import BadRequest, NotFound, StarchartError
from starchart.services.chat import ChatService
from starchart.services.context import fit
from starchart.store.conversations import Conversation as StoredConversation
from starchart.store.conversations import ConversationStore, Owner, StoredMessage
from starchart.structured.replies import ReplyEvent, with_tool_calls
from starchart.structured.request import StructuredRequest
from starchart.structured.tools import ToolCallDelta

log = logging.getLogger("starchart.conversations")

FLUSH_SECONDS = 0.5
QUEUE_POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Queued:
    """The turn's place in the model's queue changed; None: it left the queue."""

    position: int | None


TurnEvent = ReplyEvent | Queued


@dataclass(frozen=True)
class _Failed:
    error: StarchartError


_END = object()


@dataclass
class Turn:
    """A reply being generated; read it with ``events()`` or ``result()``."""

    conversation_id: str
    user_message: StoredMessage
    reply: StoredMessage  # kept up to date; final once the turn is over
    dropped_turns: int
    model: str
    _store: ConversationStore
    _prompt_tokens: int  # as fitted: known before the first token, and for stopped replies
    _events: AsyncIterator[ReplyEvent]
    _release: Any  # async () -> None: lets the next turn on this conversation start
    # Continuing an answer: its text so far (the new text is appended to it).
    _prefix: str = ""
    _queue: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None
    _started: bool = False
    _finished: bool = False
    _stopping: bool = False
    _writing: asyncio.Future[None] | None = None

    @property
    def message_id(self) -> str:
        return self.reply.id

    @property
    def prompt_tokens(self) -> int:
        return self._prompt_tokens

    @property
    def continued(self) -> bool:
        return bool(self._prefix)

    async def events(self) -> AsyncGenerator[TurnEvent]:
        """Deltas (text, or tool-call pieces) then one ``Finish`` (sent once the reply
        is committed); before the first delta, ``Queued`` when the turn's place in
        the model's queue changes.

        A ``StarchartError`` during generation is raised here after the partial
        reply is stored. Leaving early stops generation.
        """
        try:
            while True:
                item = await self._queue.get()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item  # type: ignore[misc]
        finally:
            # No await here: under Starlette a disconnected client's task is
            # cancelled for good, and the turn's own task does the saving.
            self.stop()

    async def result(self) -> StoredMessage:
        """Wait for the whole reply; stops generation if the waiter is cancelled."""
        async for _ in self.events():
            pass
        return self.reply

    def stop(self) -> None:
        """Stop generating; the text so far is stored. No-op once the reply is complete."""
        if self._stopping or self._finished or self._task is None or self._task.done():
            return
        self._stopping = True
        # A task cancelled before its first step never runs its body (nor its
        # finally): it would keep the conversation locked. Not started yet, it
        # sees the flag instead.
        if self._started:
            self._task.cancel()

    async def done(self) -> None:
        """Wait until the turn's task has stored everything (never raises)."""
        if self._task is not None:
            await asyncio.wait([self._task])

    def _flush_soon(self, text: str) -> None:
        """Write the partial reply without making generation wait for the disk.

        At most one write is in flight; a flush due while one runs is skipped
        (the next delta tries again).
        """
        if self._writing is not None and not self._writing.done():
            return
        self._writing = asyncio.ensure_future(asyncio.to_thread(
            self._store.save_reply, self.reply.id, self._prefix + text, incomplete=True))

    async def _report_queue(self, watch: QueueWatch) -> None:
        """Put ``Queued`` for the reader whenever the turn's place changes (cancelled
        at the first token)."""
        reported: int | None = None
        while True:
            await asyncio.sleep(QUEUE_POLL_SECONDS)
            position = watch.position()
            if position != reported:
                self._queue.put_nowait(Queued(position))
                reported = position

    def _timings(self, started: float, first: float | None, ended: float, pieces: int,
                 finish: Finish | None, queued: float | None) -> dict[str, float | None]:
        """The reply's speed as measured here: time to first token (queue included),
        the time spent in the engine's queue (``queued``, when it has one), prompt
        tokens per second over the time to first token out of the queue, decode
        tokens per second after it."""
        queue_ms = round(queued * 1000, 1) if queued is not None else None
        if first is None:
            return {"ttft_ms": None, "queue_ms": queue_ms, "prompt_tokens_per_second": None,
                    "tokens_per_second": None}
        ttft = first - started
        reading = ttft - queued if queued is not None and queued < ttft else ttft
        prompt = finish.usage.prompt_tokens if finish is not None else self._prompt_tokens
        generated = finish.usage.completion_tokens if finish is not None else pieces
        decode = ended - first
        return {
            "ttft_ms": round(ttft * 1000, 1),
            "queue_ms": queue_ms,
            "prompt_tokens_per_second": round(prompt / reading, 1) if reading > 0 else None,
            "tokens_per_second": (round((generated - 1) / decode, 2)
                                  if generated > 1 and decode > 0 else None),
        }

    async def _save(self, text: str, finish: Finish | None, reason: str | None,
                    timings: dict[str, float | None] | None = None,
                    tool_calls: list[dict[str, Any]] | None = None) -> None:
        if self._writing is not None:
            await asyncio.wait([self._writing])  # keep writes in order
            if not self._writing.cancelled() and self._writing.exception() is not None:
                log.error("could not save a partial reply: %s", self._writing.exception())
        reply = self.reply
        text = self._prefix + text
        reply.content = text
        reply.incomplete = finish is None
        reply.finish_reason = reason
        reply.usage = finish.usage.as_dict() if finish is not None else None
        reply.timings = timings
        reply.tool_calls = tool_calls
        await asyncio.to_thread(self._store.save_reply, reply.id, text,
                                incomplete=reply.incomplete, finish_reason=reason,
                                usage=reply.usage, timings=timings, tool_calls=tool_calls)

    async def _run(self) -> None:
        parts: list[str] = []
        calls: list[dict[str, Any]] = []  # OpenAI's shape, as stored
        finish: Finish | None = None
        failure: StarchartError | None = None
        reason: str | None = None
        last_flush = time.monotonic()
        started = time.perf_counter()
        first: float | None = None
        external_cancel = False
        self._started = True
        watch = QueueWatch()
        QUEUE_WATCH.set(watch)  # this task's context: the engine sees it, no other request
        queue_reports = asyncio.create_task(self._report_queue(watch))
        try:
            if self._stopping:
                raise asyncio.CancelledError
            async for event in self._events:
                if first is None:
                    queue_reports.cancel()
                if isinstance(event, TextDelta):
                    if first is None:
                        first = time.perf_counter()
                    parts.append(event.text)
                    self._queue.put_nowait(event)
                    if time.monotonic() - last_flush >= FLUSH_SECONDS:
                        self._flush_soon("".join(parts))
                        last_flush = time.monotonic()
                elif isinstance(event, ToolCallDelta):
                    if first is None:
                        first = time.perf_counter()
                    if event.name is not None:
                        calls.append({"id": event.id, "type": "function",
                                      "function": {"name": event.name, "arguments": ""}})
                    calls[event.index]["function"]["arguments"] += event.arguments
                    self._queue.put_nowait(event)
                elif isinstance(event, Finish):
                    finish, reason = event, event.reason
                    self._finished = True
        except asyncio.CancelledError:
            reason = "cancelled"
            external_cancel = not self._stopping
        except StarchartError as exc:
            failure, reason = exc, "error"
        except Exception:
            log.exception("error while generating a conversation reply")
            failure = StarchartError("internal server error (logged on the server)")
            reason = "error"
        queue_reports.cancel()
        try:
            await self._events.aclose()  # type: ignore[attr-defined]
            timings = self._timings(started, first, time.perf_counter(), len(parts), finish,
                                    watch.waited())
            if self._prefix and first is None and finish is None:
                pass  # a continuation that said nothing: the answer stays as it was
            else:
                await self._save("".join(parts), finish, reason, timings, calls or None)
        except Exception:
            log.exception("could not save reply %s", self.reply.id)
            failure = failure or StarchartError("the reply could not be saved (logged on"
                                                " the server)")
            finish = None
        finally:
            await self._release()
            if finish is not None:
                self._queue.put_nowait(finish)
            if failure is not None:
                self._queue.put_nowait(_Failed(failure))
            self._queue.put_nowait(_END)
        if external_cancel:
            raise asyncio.CancelledError


def _history(messages: list[StoredMessage]) -> list[dict[str, Any]]:
    """Stored messages as the chat template gets them (tool calls included)."""
    return [{"role": m.role, "content": m.content,
             **({"tool_calls": m.tool_calls} if m.tool_calls else {})} for m in messages]


class ConversationChat:
    """Starts turns (each holding its conversation's lock) and keeps the running ones."""

    def __init__(self, service: ChatService, store: ConversationStore) -> None:
        self.service = service
        self.store = store
        self._running: set[asyncio.Task[None]] = set()

    async def start(self, conversation_id: str, owner: Owner, content: str | None,
                    params: SamplingParams, model: str | None = None,
                    replace: str | None = None,
                    structured: StructuredRequest | None = None,
                    continue_: bool = False) -> Turn:
        """Validate, commit the user message, start generating. Raises before
        anything is stored when the conversation, the model or the prompt is wrong.
        ``content`` None regenerates: the last user turn is answered again and
        its previous answer replaced. ``replace`` (a user message's id) edits:
        that message and everything after it give way to ``content`` and its answer.
        ``structured``: the turn's response_format / tools (``structured.request.plan``).
        ``continue_`` (``content`` None): go on with the last answer, appending to it.
        """
        # Held from here to the end of the reply (the turn's task lets go), in
        # every replica sharing the database (ConversationStore.turn_lock).
        hold = AsyncExitStack()
        await hold.enter_async_context(self.store.turn_lock(conversation_id))
        try:
            # The model is loaded (on demand) before anything is tokenized, and held
            # loaded while the turn is prepared on a worker thread.
            if model is None:
                model = (await asyncio.to_thread(self.store.get, conversation_id, owner)).model
            engine = await self.service.ready(model)
            with self.service.pool.hold(engine.info.id):
                turn = await asyncio.to_thread(self._prepare, conversation_id, owner, content,
                                               params, engine.info.id, replace, hold.aclose,
                                               structured or StructuredRequest(), continue_)
        except BaseException:
            await hold.aclose()
            raise
        turn._task = asyncio.create_task(turn._run())
        self._running.add(turn._task)
        turn._task.add_done_callback(self._running.discard)
        return turn

    def _prepare(self, conversation_id: str, owner: Owner, content: str | None,
                 params: SamplingParams, model: str | None, replace: str | None,
                 release: Any, structured: StructuredRequest,
                 continue_: bool = False) -> Turn:
        conv = self.store.get(conversation_id, owner)
        engine = self.service.engine(model or conv.model)
        if continue_:
            return self._prepare_continue(conv, engine, params, release, structured)
        structured.require_decoder(engine.info.id, engine.structured)
        params = params.replace(grammar=structured.grammar)
        system = self._system_prompt(conv)
        earlier = list(conv.messages)
        if replace is not None:
            at = next((i for i, m in enumerate(earlier) if m.id == replace), None)
            if at is None or earlier[at].role != "user":
                raise NotFound(f"no user message with id {replace!r} in this conversation",
                               param="replace")
            earlier = earlier[:at]
        replaced = None
        if content is None:
            if earlier and earlier[-1].role == "assistant":
                replaced = earlier.pop()
            if not earlier or earlier[-1].role != "user":
                raise BadRequest("nothing to regenerate: the conversation has no user turn",
                                 param="regenerate")
        history = _history(earlier)
        if content is not None:
            history.append({"role": "user", "content": content})
        native = engine.takes_tools
        tools = structured.template_tools(native)
        # The tool prompt (templates without tools) joins the system turn.
        prepared = structured.prepare([{"role": "system", "content": system}, *history],
                                      native_tools=native)
        fitted = fit(engine, prepared[0], prepared[1:], params.max_tokens, tools)
        if content is None:
            user = earlier[-1]
            if replaced is not None:
                self.store.delete_message(conversation_id, owner, replaced.id)
        else:
            if replace is not None:
                self.store.delete_from(conversation_id, owner, replace)
            user = self.store.add_message(conversation_id, owner, "user", content)
        reply = self.store.add_message(
            conversation_id, owner, "assistant", "", incomplete=True, model=engine.info.id,
            dropped_turns=fitted.dropped, params={**params.as_dict(), "system_prompt": system})
        # Creating the stream only tokenizes (fit() already did, so it cannot
        # overflow now); nothing runs until the turn's task iterates it.
        events = with_tool_calls(self.service.stream_chat(engine.info.id, fitted.messages,
                                                          params, tools), structured)
        return Turn(conversation_id=conversation_id, user_message=user, reply=reply,
                    dropped_turns=fitted.dropped, model=engine.info.id, _store=self.store,
                    _prompt_tokens=fitted.prompt_tokens, _events=events,
                    _release=release)

    def _system_prompt(self, conv: StoredConversation) -> str:
        return (conv.system_prompt if conv.system_prompt is not None
                else self.service.settings.system_prompt)

    def _prepare_continue(self, conv: StoredConversation, engine: Engine,
                          params: SamplingParams, release: Any,
                          structured: StructuredRequest) -> Turn:
        """Go on with the conversation's last answer: no new user turn, and the
        stored answer is extended (its outcome, usage and timings become those of
        this generation)."""
        if structured.grammar is not None or structured.offers_tools:
            raise BadRequest("continue: true cannot be combined with response_format or"
                             " tools (the answer was not started under them)", param="continue")
        if not engine.can_continue:
            raise BadRequest(f"model {engine.info.id!r} is answered by an upstream server,"
                             " which cannot continue an answer", param="continue")
        earlier = list(conv.messages)
        reply = earlier[-1] if earlier else None
        user = next((m for m in reversed(earlier) if m.role == "user"), None)
        if reply is None or reply.role != "assistant" or not reply.content or user is None:
            raise BadRequest("nothing to continue: the conversation does not end with an"
                             " answer to a user turn", param="continue")
        if reply.tool_calls:
            raise BadRequest("an answer that called tools cannot be continued",
                             param="continue")
        system = self._system_prompt(conv)
        prepared = structured.prepare([{"role": "system", "content": system},
                                       *_history(earlier)], native_tools=engine.takes_tools)
        fitted = fit(engine, prepared[0], prepared[1:], params.max_tokens, continue_final=True)
        events = self.service.stream_chat(engine.info.id, fitted.messages, params,
                                          continue_final=True)
        return Turn(conversation_id=conv.id, user_message=user, reply=reply,
                    dropped_turns=fitted.dropped, model=engine.info.id, _store=self.store,
                    _prompt_tokens=fitted.prompt_tokens, _events=events,
                    _release=release, _prefix=reply.content)

    async def drain(self) -> None:
        """Wait for every running turn to finish storing (shutdown, tests)."""
        if self._running:
            await asyncio.wait(list(self._running))
