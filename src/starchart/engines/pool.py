"""Several models in one server: which are loaded, and loading and unloading them.

The pool wraps each model's engine as it is (the llama.cpp engine keeps its
batch scheduler, ``--parallel`` sequences and all) and decides only *when* an
engine is loaded:

* at start-up (all of them), or on a model's first request (``--load-on-demand``,
  and after ``--keep-alive`` unloaded it): concurrent first requests wait for
  the same load, each up to ``--load-timeout``;
* never beyond the memory budget (``--memory-budget``): a model's memory is the
  planner's estimate (``memory_estimate``); to make room the least recently used
  idle model is unloaded first; when even that is not enough, ``OverBudget`` (503)
  says what was needed, the budget and what is loaded;
* an engine with a request in flight (a ``hold``) is never unloaded.

A model whose load fails is marked failed with its error (its requests get 503
with it); the other models keep serving, and the next request tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from starchart.doctor.units import gb
from starchart.engines.base import Engine, StreamEvent
from starchart.errors import Conflict, OverBudget, StarchartError, Unavailable
from starchart.settings import Settings

log = logging.getLogger("starchart.pool")

State = Literal["loaded", "loading", "unloaded", "failed"]


def _over_budget(model: str, needed: int, budget: int, loaded: int,
                 busy: dict[str, int]) -> OverBudget:
    if needed > budget:
        why = "so it cannot load even alone"
    else:
        names = ", ".join(f"{name} ~{gb(size)}" for name, size in busy.items())
        why = f"and models with requests in flight hold ~{gb(sum(busy.values()))} ({names})"
    return OverBudget(
        f"model {model!r} needs ~{gb(needed)} of memory; the budget is {gb(budget)}"
        f" (--memory-budget) {why}; ~{gb(loaded)} is loaded now. Raise --memory-budget,"
        " lower --n-ctx or --parallel, or try again when the others are idle",
        needed=needed, budget=budget, loaded=loaded)


@dataclass(frozen=True)
class PoolPolicy:
    """How the pool behaves (from ``settings``; the default: everything stays loaded)."""

    on_demand: bool = False  # a request for an unloaded model loads it
    preload: bool = True  # load every model at start-up
    keep_alive: float | None = None  # seconds idle before unloading
    budget: int | None = None  # bytes
    load_timeout: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings, local_models: int) -> PoolPolicy:
        """--keep-alive implies loading on demand: what it unloads comes back when asked."""
        budget = settings.memory_budget_bytes
        if budget is None and local_models > 1:
            budget = default_budget(settings)
        return cls(on_demand=settings.load_on_demand or settings.keep_alive is not None,
                   preload=not settings.load_on_demand,
                   keep_alive=settings.keep_alive_seconds, budget=budget,
                   load_timeout=settings.load_timeout)


def default_budget(settings: Settings) -> int | None:
    """The doctor's view of free memory where the models go: the GPUs' when layers are
    offloaded (or the transformers engine may use CUDA), else RAM available."""
    from starchart.doctor.nvidia import GpuProbe, probe
    from starchart.doctor.planner import free_memory
    from starchart.doctor.system import memory

    gpu = (settings.n_gpu_layers != 0 if settings.engine == "llamacpp"
           else settings.device in ("auto", "cuda"))
    return free_memory(probe() if gpu else GpuProbe(), memory().available).free


@dataclass
class PooledModel:
    engine: Engine
    memory_bytes: int  # the planner's estimate; 0 when unknown or remote
    state: State = "unloaded"
    error: str | None = None
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    loads: int = 0  # completed loads (tests count them)
    load_seconds: float | None = None
    _loading: asyncio.Task[list[str]] | None = None

    @property
    def name(self) -> str:
        return self.engine.info.id

    @property
    def resident(self) -> bool:
        """Taking memory: loaded, or on its way."""
        return self.state in ("loaded", "loading")


def memory_estimate(engine: Engine) -> int:
    """Bytes ``engine`` takes once loaded, by the doctor's planner: weights, the KV cache
    of every sequence (``--parallel`` of them, each with its whole context) and the
    compute buffers. 0 when the model's files cannot say (a hub id not downloaded yet)."""
    from starchart.doctor.planner import (
        Device,
        kv_cache_bytes,
        load_shape,
        overhead_bytes,
        shape_from_gguf,
        weight_bytes,
    )

    path = Path(engine.info.path)
    if engine.info.engine == "remote" or not path.exists():
        return 0
    try:
        if path.suffix.lower() == ".gguf":
            shape = shape_from_gguf(path, name=engine.info.id)
            parallel = int(getattr(getattr(engine, "config", None), "parallel", 1))
            weights = shape.gguf_weight_bytes or path.stat().st_size
            device: Device = "gpu" if getattr(engine, "gpu", {}).get("n_gpu_layers") else "cpu"
            return (weights + kv_cache_bytes(shape, engine.info.n_ctx, parallel)
                    + overhead_bytes(shape, weights, engine.info.n_ctx, 1, device=device,
                                     engine="llamacpp"))
        shape = load_shape(str(path))
        weights = weight_bytes(shape, "fp32" if engine.info.dtype == "float32" else "fp16/bf16")
        return (weights + kv_cache_bytes(shape, engine.info.n_ctx, 1)
                + overhead_bytes(shape, weights, engine.info.n_ctx, 1, device="cpu",
                                 engine="transformers"))
    except Exception as exc:  # noqa: BLE001 - a corrupt file's load says so, clearly
        # An estimate is advice: a file the planner cannot read is estimated 0.
        log.warning("no memory estimate for %s: %s", engine.info.id, exc)
        return 0


class ModelPool:
    def __init__(self, engines: dict[str, Engine], policy: PoolPolicy | None = None, *,
                 estimate: Callable[[Engine], int] = memory_estimate,
                 on_loaded: Callable[[str, float], None] | None = None) -> None:
        self.policy = policy or PoolPolicy()
        self.engines = engines
        self.models = {name: PooledModel(engine, estimate(engine),
                                         state="loaded" if engine.loaded else "unloaded")
                       for name, engine in engines.items()}
        self._on_loaded = on_loaded
        # Budget decisions (what to unload, whether a load fits) one at a time.
        self._room = asyncio.Lock()
        self._count = threading.Lock()  # holds are taken on worker threads too

    def model(self, name: str) -> PooledModel:
        return self.models[name]

    def loaded_bytes(self) -> int:
        return sum(m.memory_bytes for m in self.models.values() if m.resident)

    # -- using a model ----------------------------------------------------------

    async def ready(self, name: str) -> Engine:
        """The engine of ``name``, loaded: at once when it is, else after its load
        (started here under --load-on-demand, or the one under way), waiting at most
        --load-timeout. It stays loaded until the caller's next ``await``: take a
        ``hold`` (or start the stream, which holds) before awaiting anything."""
        entry = self.models[name]
        if entry.state == "loaded" and entry.engine.loaded:
            entry.last_used = time.monotonic()
            return entry.engine
        if not self.policy.on_demand and (entry._loading is None or entry._loading.done()):
            raise Unavailable(self._why_not_loaded(entry))
        try:
            # Not wait_for: on Python 3.11 it returns the load's result when the caller
            # is cancelled in the turn the load finishes, and the cancellation is lost.
            async with asyncio.timeout(self.policy.load_timeout):
                await asyncio.shield(self._load_task(entry))
        except TimeoutError:
            raise Unavailable(f"model {name!r} is still loading after"
                              f" {self.policy.load_timeout:g} s (--load-timeout); try again"
                              " shortly") from None
        if entry.state != "loaded" or not entry.engine.loaded:  # unloaded again meanwhile
            raise Unavailable(self._why_not_loaded(entry))
        entry.last_used = time.monotonic()
        return entry.engine

    def _why_not_loaded(self, entry: PooledModel) -> str:
        if entry.error:
            return f"model {entry.name!r} could not be loaded: {entry.error}"
        if entry.state == "loading":
            return f"model {entry.name!r} is loading; try again shortly (GET /ready)"
        return (f"model {entry.name!r} is not loaded; load it with POST /v1/models/"
                f"{entry.name}/load (or serve with --load-on-demand)")

    def require(self, name: str) -> Engine:
        """The engine of ``name`` if it is loaded now, else 503 saying why."""
        entry = self.models[name]
        if entry.state != "loaded" or not entry.engine.loaded:
            raise Unavailable(self._why_not_loaded(entry))
        return entry.engine

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[Engine]:
        """Keep ``name`` loaded (and count it busy) inside the block; it must be loaded."""
        entry = self.models[name]
        self.require(name)
        with self._count:
            entry.in_flight += 1
        try:
            yield entry.engine
        finally:
            with self._count:
                entry.in_flight -= 1
            entry.last_used = time.monotonic()

    def held(self, name: str, events: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
        """``events``, holding ``name`` loaded from now until the stream is closed."""
        return _HeldStream(self.hold(name), events)

    # -- loading and unloading --------------------------------------------------

    async def load(self, name: str) -> list[str]:
        """Load ``name`` (or wait for its load under way); returns the models unloaded
        to make room for it."""
        entry = self.models[name]
        if entry.state == "loaded" and entry.engine.loaded:
            entry.last_used = time.monotonic()
            return []
        return await asyncio.shield(self._load_task(entry))

    def _load_task(self, entry: PooledModel) -> asyncio.Task[list[str]]:
        """The one load of ``entry`` every waiter shares."""
        if entry._loading is None or entry._loading.done():
            task = asyncio.create_task(self._load(entry), name=f"load-{entry.name}")
            # Its failure reaches every waiter; with none left (timed out) it is logged.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            entry._loading = task
        return entry._loading

    async def _load(self, entry: PooledModel) -> list[str]:
        """Load ``entry``; returns the models unloaded to make room for it."""
        async with self._room:
            if entry.engine.loaded:
                entry.state = "loaded"
                return []
            unloaded = await self._make_room(entry)
            entry.state, entry.error = "loading", None
        started = time.perf_counter()
        try:
            await asyncio.to_thread(entry.engine.load)
        except Exception as exc:
            if isinstance(exc, StarchartError):
                entry.error = exc.message
                log.error("could not load %s: %s", entry.name, exc.message)
            else:  # an engine should have said it in its own words: logged as a bug
                entry.error = f"{type(exc).__name__}: {exc}"
                log.exception("could not load %s", entry.name)
            entry.state = "failed"
            # mypy narrowed ``loaded`` to False at the top; the failed load may have set it.
            if entry.engine.loaded:
                entry.engine.close()  # type: ignore[unreachable]
            raise Unavailable(f"model {entry.name!r} could not be loaded: {entry.error}",
                              param="model") from None
        except BaseException:
            entry.state = "loaded" if entry.engine.loaded else "unloaded"
            raise
        entry.load_seconds = time.perf_counter() - started
        entry.state, entry.loads, entry.last_used = "loaded", entry.loads + 1, time.monotonic()
        if self._on_loaded is not None:
            self._on_loaded(entry.name, entry.load_seconds)
        log.info("model %s loaded in %.1f s (%s, n_ctx=%d, ~%s)", entry.name,
                 entry.load_seconds, entry.engine.info.engine, entry.engine.info.n_ctx,
                 gb(entry.memory_bytes))
        return unloaded

    async def _make_room(self, entry: PooledModel) -> list[str]:
        """Unload least recently used idle models until ``entry`` fits the budget."""
        budget = self.policy.budget
        if budget is None:
            return []
        others = [m for m in self.models.values() if m is not entry and m.resident]
        used = sum(m.memory_bytes for m in others)
        unloaded: list[str] = []
        idle = sorted((m for m in others if m.state == "loaded" and m.in_flight == 0
                       and m.memory_bytes > 0),
                      key=lambda m: m.last_used)
        if used + entry.memory_bytes > budget:
            busy = {m.name: m.memory_bytes for m in others if m not in idle}
            if sum(busy.values()) + entry.memory_bytes > budget:
                raise _over_budget(entry.name, entry.memory_bytes, budget, used, busy)
        for victim in idle:
            if used + entry.memory_bytes <= budget:
                break
            log.info("unloading %s (least recently used) to make room for %s",
                     victim.name, entry.name)
            await self._unload(victim)
            used -= victim.memory_bytes
            unloaded.append(victim.name)
        return unloaded

    async def unload(self, name: str) -> None:
        """Unload ``name`` now; refused (409) while it has requests in flight."""
        entry = self.models[name]
        if entry._loading is not None and not entry._loading.done():
            with contextlib.suppress(StarchartError):
                await asyncio.shield(entry._loading)
        async with self._room:
            if entry.in_flight:
                raise Conflict(f"model {name!r} has {entry.in_flight} request(s) in flight;"
                               " unload it when they are done", param="name")
            await self._unload(entry)

    async def _unload(self, entry: PooledModel) -> None:
        if entry.engine.info.engine == "remote":
            return  # nothing in memory here
        # First, before any await: from here no request takes it (ready() loads it
        # again, after this unload, since both hold the budget lock).
        entry.state = "unloaded"
        if entry.engine.loaded:
            await asyncio.to_thread(entry.engine.close)

    async def start(self) -> None:
        """Start-up: load every model in order (under --load-on-demand only the remote
        ones, which take no memory here); a failure leaves the others loading."""
        for name, entry in self.models.items():
            if not self.policy.preload and entry.engine.info.engine != "remote":
                continue
            with contextlib.suppress(StarchartError):
                await self.load(name)

    async def expire_idle(self) -> None:
        """Unload, now and then, every model idle longer than --keep-alive."""
        keep = self.policy.keep_alive
        if keep is None:
            return
        while True:
            await asyncio.sleep(min(max(keep / 4, 0.05), 5.0))
            now = time.monotonic()
            for entry in list(self.models.values()):
                if (entry.state == "loaded" and entry.in_flight == 0
                        and now - entry.last_used >= keep
                        and entry.engine.info.engine != "remote"):
                    async with self._room:
                        if entry.in_flight == 0 and entry.state == "loaded":
                            log.info("unloading %s: idle for %.0f s (--keep-alive)",
                                     entry.name, now - entry.last_used)
                            await self._unload(entry)

    def close(self) -> None:
        for entry in self.models.values():
            if entry._loading is not None:
                entry._loading.cancel()


class _HeldStream:
    """An engine's stream that keeps its model held from creation to close.

    A class, not an async generator: a generator's ``finally`` does not run when
    it is closed before its first step, and the hold must end then too."""

    def __init__(self, hold: contextlib.AbstractContextManager[Engine],
                 events: AsyncIterator[StreamEvent]) -> None:
        hold.__enter__()
        self._hold: contextlib.AbstractContextManager[Engine] | None = hold
        self._events = events

    def __aiter__(self) -> _HeldStream:
        return self

    async def __anext__(self) -> StreamEvent:
        try:
            return await self._events.__anext__()
        except BaseException:
            self._release()
            raise

    async def aclose(self) -> None:
        try:
            await self._events.aclose()  # type: ignore[attr-defined]
        finally:
            self._release()

    def _release(self) -> None:
        if self._hold is not None:
            hold, self._hold = self._hold, None
            hold.__exit__(None, None, None)

    def __del__(self) -> None:  # dropped without being closed
        self._release()


def describe(entry: PooledModel) -> dict[str, Any]:
    """The pool's view of one model, for ``/v1/models``."""
    return {"state": entry.state, "memory_bytes": entry.memory_bytes,
            **({"load_error": entry.error} if entry.error else {})}
