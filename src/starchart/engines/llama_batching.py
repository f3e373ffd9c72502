"""Continuous batching for one llama.cpp context: many sequences, one decode per step.

One scheduler thread owns the context. Each step it builds one ``llama_batch``:
the pending token of every generating sequence, then up to ``prefill_chunk``
prompt tokens of sequences still reading their prompt, and calls
``llama_decode`` once, so the weights are read once for all of them. Requests
join between steps (continuous batching); a sequence that finishes leaves at
once and its slot takes the next request.

Slots and the KV cache: the context has ``parallel`` sequence ids, each with
its own stream of ``n_ctx`` cells (``kv_unified`` off: a sequence attends only
to its own cells). A cancelled sequence's cells are removed at once
(``llama_memory_seq_rm``). A finished one keeps its prompt + answer resident
in its (now free) slot: when the next turn of that conversation arrives, the
longest common token prefix is kept and only the rest is decoded (prefix
reuse, counted in ``reused_tokens``). A new request takes the free slot whose
resident tokens share the longest prefix with its prompt, else the one used
longest ago, whose cells it then overwrites.

The stall bound: while sequences are generating, a step carries at most
``prefill_chunk`` prompt tokens, so a long prompt arriving delays the running
streams by the time of one such chunk per step instead of the whole prompt.
With nobody generating a prompt is read in batches of ``n_batch``.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import llama_cpp
import numpy as np

from starchart.engines import logprobs
from starchart.engines.base import (
    QUEUE_WATCH,
    Finish,
    SamplingParams,
    StreamEvent,
    TextDelta,
    TokenLogprob,
    Usage,
)
from starchart.engines.llama_sampling import Sampler, make_sampler
from starchart.engines.textstream import TextStream
from starchart.errors import QueueFull, StarchartError, Unavailable
from starchart.structured.decoding import Constraint

log = logging.getLogger("starchart.llamacpp")


@dataclass(frozen=True)
class _Failed:
    exc: BaseException


_DONE = object()


@dataclass(eq=False)
class _Request:
    prompt: list[int]
    params: SamplingParams
    emit: Callable[[object], None]
    constraint: Constraint | None = None  # the request's grammar state (structured output)
    submitted: float = field(default_factory=time.monotonic)
    admitted: float | None = None  # when it left the queue for a slot
    # Set by the consumer (any thread); the scheduler looks at it every step.
    cancelled: bool = False


@dataclass(eq=False)
class _Slot:
    seq_id: int
    # Tokens whose KV cells are resident in this sequence, positions 0..len-1.
    cached: list[int] = field(default_factory=list)
    last_used: float = 0.0
    request: _Request | None = None
    sampler: Sampler | None = None
    text: TextStream | None = None
    pending: int | None = None  # sampled, to be decoded next step
    produced: int = 0
    budget: int = 0
    started: float = 0.0
    # Tokens (and, if asked for, their logprobs) whose text is not sent yet.
    unsent: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)

    @property
    def prefilling(self) -> bool:
        return self.request is not None and self.pending is None


@dataclass(eq=False)
class _Ticket:
    """A stream's reserved place in the queue, until it is queued or dropped."""

    held: bool = True


@dataclass(frozen=True)
class BatchConfig:
    parallel: int
    max_queue: int
    n_ctx: int  # per sequence
    n_batch: int
    prefill_chunk: int


class BatchScheduler:
    """Owns ``ctx`` from its own thread; ``stream()`` is the asyncio side."""

    def __init__(self, name: str, ctx: ctypes.c_void_p, config: BatchConfig, *,
                 n_vocab: int, eog: frozenset[int], piece: Callable[[int], bytes],
                 on_token: Callable[[], None]) -> None:
        self.config = config
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._n_vocab = n_vocab
        self._eog = eog
        self._eog_list = sorted(eog)
        self._piece = piece
        self._on_token = on_token
        self._slots = [_Slot(i) for i in range(config.parallel)]
        self._waiting: deque[_Request] = deque()
        self._reserved = 0  # streams created, not yet read: queued as soon as they are
        self._cond = threading.Condition()
        self._closing = False
        self._batch = llama_cpp.llama_batch_init(config.n_batch, 0, 1)
        # Prompt tokens whose KV cells were reused instead of decoded again.
        self.reused_tokens = 0
        # Seconds a request took, smoothed: the basis of Retry-After.
        self._request_seconds = 5.0
        self._thread = threading.Thread(target=self._run, name=f"llamacpp-{name}", daemon=True)
        self._thread.start()

    # -- the asyncio side ---------------------------------------------------

    @property
    def running(self) -> int:
        return sum(1 for s in self._slots if s.request is not None)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def resident_tokens(self, seq_id: int) -> int:
        """KV cells held by one sequence id, as llama.cpp's memory reports them."""
        top = llama_cpp.llama_memory_seq_pos_max(self._mem, seq_id)
        return 0 if top < 0 else top - llama_cpp.llama_memory_seq_pos_min(self._mem, seq_id) + 1

    def check_room(self) -> None:
        """Refuse a request the bounded queue cannot take (before its stream starts)."""
        with self._cond:
            self._check_room()

    def _check_room(self) -> None:
        """``check_room`` with the lock held."""
        idle = sum(1 for s in self._slots if s.request is None)
        if len(self._waiting) + self._reserved - idle < self.config.max_queue:
            return
        waiting = len(self._waiting)
        seconds = self._request_seconds * (1 + waiting / self.config.parallel)
        raise QueueFull(
            f"the server is busy: {self.config.parallel} requests running and {waiting}"
            f" waiting (limit --max-queue {self.config.max_queue}); retry later",
            retry_after=max(1, round(seconds)),
        )

    def stream(self, prompt: list[int], params: SamplingParams, *,
               constraint: Constraint | None = None) -> AsyncIterator[StreamEvent]:
        """Reserve a place in the queue now (or raise ``QueueFull``): the room check and
        the reservation are one step, so a burst of requests cannot all pass the check
        before any of them is queued. The returned iterator queues the request when
        first read; dropped unread, it gives its place back."""
        ticket = _Ticket()
        with self._cond:
            if self._closing:
                raise Unavailable("the model is shutting down")
            self._check_room()
            self._reserved += 1
        events = self._events(prompt, params, constraint, ticket)
        weakref.finalize(events, self._release, ticket)
        return events

    def _release(self, ticket: _Ticket) -> None:
        with self._cond:
            if ticket.held:
                ticket.held = False
                self._reserved -= 1

    async def _events(self, prompt: list[int], params: SamplingParams,
                      constraint: Constraint | None, ticket: _Ticket
                      ) -> AsyncIterator[StreamEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        request: _Request

        def emit(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening
                request.cancelled = True

        request = _Request(prompt, params, emit, constraint)
        watch = QUEUE_WATCH.get()
        if watch is not None:
            watch.track(lambda: self._position(request),
                        lambda: None if request.admitted is None
                        else request.admitted - request.submitted)
        with self._cond:
            if ticket.held:
                ticket.held = False
                self._reserved -= 1
            if self._closing:
                raise Unavailable("the model is shutting down")
            self._waiting.append(request)
            self._cond.notify()
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failed):
                    raise item.exc
                yield item  # type: ignore[misc]
        finally:
            request.cancelled = True
            with self._cond:
                if request in self._waiting:
                    self._waiting.remove(request)

    def _position(self, request: _Request) -> int | None:
        """1 + the requests ahead of ``request`` while it waits; None once admitted."""
        with self._cond:
            return next((i + 1 for i, r in enumerate(self._waiting) if r is request), None)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        for request in self._waiting:
            request.emit(_Failed(Unavailable("the model was unloaded")))
            request.emit(_DONE)
        self._waiting.clear()
        llama_cpp.llama_batch_free(self._batch)

    # -- the scheduler thread -----------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not self._waiting and self.running == 0:
                    self._cond.wait()
                if self._closing:
                    break
            try:
                with self._cond:
                    self._admit()
                self._drop_cancelled()
                self._step()
            except Exception as exc:  # every running request hears of it
                log.exception("llama.cpp decode step failed")
                for slot in self._slots:
                    if slot.request is not None:
                        self._end(slot, failure=exc)
        for slot in self._slots:
            if slot.request is not None:
                self._end(slot, failure=Unavailable("the model was unloaded"))

    def _admit(self) -> None:
        """Move waiting requests into free slots (called with the lock held)."""
        while self._waiting:
            free = [s for s in self._slots if s.request is None]
            if not free:
                return
            request = self._waiting.popleft()
            if request.cancelled:
                request.emit(_DONE)
                continue
            slot = max(free, key=lambda s: (_common_prefix(s.cached, request.prompt),
                                            -s.last_used))
            self._start(slot, request)

    def _start(self, slot: _Slot, request: _Request) -> None:
        prompt = request.prompt
        # Keep the shared prefix, but decode at least the last prompt token: its
        # logits give the first answer token.
        keep = min(_common_prefix(slot.cached, prompt), len(prompt) - 1)
        if keep < len(slot.cached):
            llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, keep, -1)
            del slot.cached[keep:]
        self.reused_tokens += keep
        params = request.params
        slot.request = request  # from here a failure reaches the request through _end
        slot.sampler = make_sampler(params, n_vocab=self._n_vocab,
                                    banned=self._eog_list if params.ignore_eos else (),
                                    constraint=request.constraint, eog=self._eog)
        slot.text = TextStream(params.stop)
        slot.pending = None
        slot.produced = slot.unsent = 0
        slot.logprobs = []
        slot.budget = min(params.max_tokens, self.config.n_ctx - len(prompt))
        slot.started = request.admitted = time.monotonic()
        if slot.budget <= 0:
            self._end(slot, reason="length")

    def _drop_cancelled(self) -> None:
        for slot in self._slots:
            if slot.request is not None and slot.request.cancelled:
                self._end(slot, reason="stop", free_cells=True)

    def _step(self) -> None:
        batch = self._batch
        outputs: list[tuple[int, _Slot]] = []
        n = 0
        for slot in self._slots:
            if slot.request is not None and slot.pending is not None:
                _put(batch, n, slot.pending, len(slot.cached), slot.seq_id, True)
                slot.cached.append(slot.pending)
                outputs.append((n, slot))
                n += 1
        room = self.config.prefill_chunk if n else self.config.n_batch
        room = min(room, self.config.n_batch - n)
        for slot in sorted((s for s in self._slots if s.prefilling),
                           key=lambda s: s.request.submitted):  # type: ignore[union-attr]
            if room <= 0:
                break
            prompt = slot.request.prompt  # type: ignore[union-attr]
            start = len(slot.cached)
            take = prompt[start:start + room]
            for i, token in enumerate(take):
                last = start + i == len(prompt) - 1
                _put(batch, n, token, start + i, slot.seq_id, last)
                if last:
                    outputs.append((n, slot))
                n += 1
            slot.cached.extend(take)
            room -= len(take)
        if n == 0:
            return
        batch.n_tokens = n
        status = llama_cpp.llama_decode(self._ctx, batch)
        if status != 0:
            raise Unavailable(f"llama.cpp could not decode a batch of {n} tokens"
                              f" (llama_decode returned {status})")
        for index, slot in outputs:
            top = slot.request.params.logprobs  # type: ignore[union-attr]
            # Before sampling: a grammar masks this same row.
            dist = None if top is None else logprobs.distribution(np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(self._ctx, index), shape=(self._n_vocab,)))
            try:
                token = slot.sampler.sample(self._ctx, index)  # type: ignore[union-attr]
            except StarchartError as exc:  # this sequence's grammar failed; the others go on
                self._end(slot, failure=exc, free_cells=True)
                continue
            if dist is not None and top is not None:
                slot.logprobs.append(logprobs.entry(dist, token, top, self._piece))
            self._next_token(slot, token)

    def _text(self, slot: _Slot, text: str) -> TextDelta:
        """``text`` with the tokens (and logprobs) not sent yet."""
        delta = TextDelta(text, tokens=slot.unsent, logprobs=tuple(slot.logprobs))
        slot.unsent = 0
        slot.logprobs = []
        return delta

    def _next_token(self, slot: _Slot, token: int) -> None:
        request = slot.request
        assert request is not None and slot.text is not None
        if token in self._eog and not request.params.ignore_eos:
            if request.params.logprobs is not None:
                slot.logprobs.pop()  # the end-of-generation token is not part of the answer
            self._end(slot, reason="stop")
            return
        slot.produced += 1
        slot.unsent += 1
        self._on_token()
        piece = slot.text.feed(self._piece(token))
        if piece:
            request.emit(self._text(slot, piece))
        if slot.text.stopped:
            self._end(slot, reason="stop")
        elif slot.produced >= slot.budget:
            self._end(slot, reason="length")
        else:
            slot.pending = token

    def _end(self, slot: _Slot, *, reason: str = "stop", failure: BaseException | None = None,
             free_cells: bool = False) -> None:
        request = slot.request
        assert request is not None
        if failure is not None:
            free_cells = True
            if not isinstance(failure, StarchartError):
                failure = Unavailable(f"llama.cpp failed: {failure}")
            request.emit(_Failed(failure))
        elif not request.cancelled:
            tail = slot.text.flush() if slot.text is not None else ""
            if tail:
                request.emit(self._text(slot, tail))
            request.emit(Finish(reason, Usage(len(request.prompt), slot.produced)))  # type: ignore[arg-type]
        request.emit(_DONE)
        if free_cells or (slot.pending is None and len(slot.cached) < len(request.prompt)):
            # Cancelled, failed or cut off mid-prompt: nothing worth keeping.
            llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
            slot.cached.clear()
        if slot.sampler is not None:
            slot.sampler.close()
        now = time.monotonic()
        if failure is None and not request.cancelled:
            self._request_seconds = 0.8 * self._request_seconds + 0.2 * (now - request.submitted)
        slot.request = slot.sampler = slot.text = slot.pending = None
        slot.last_used = now


def _put(batch: llama_cpp.llama_batch, i: int, token: int, pos: int, seq_id: int,
         logits: bool) -> None:
    batch.token[i] = token
    batch.pos[i] = pos  # type: ignore[call-overload]  # llama_cpp's stubs: an array of arrays
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq_id
    batch.logits[i] = logits


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
