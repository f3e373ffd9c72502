"""The model pool (engines/pool.py) over real llama.cpp engines of the embedded model:
one load shared by concurrent first requests, least-recently-used unloading under
a budget, busy models never unloaded, keep-alive expiry, holds released."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from starchart.engines import create_engines, served_as
from starchart.engines.base import SamplingParams
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.engines.pool import ModelPool, PoolPolicy, memory_estimate
from starchart.errors import BadRequest, Conflict, OverBudget, Unavailable
from starchart.registry import EMBEDDED_NAME, embedded_gguf
from starchart.settings import Settings

pytestmark = pytest.mark.slow


def engines(*names: str) -> dict[str, LlamaCppEngine]:
    """Unloaded batched engines (the server's own kind), small so they load fast."""
    return {name: LlamaCppEngine(name, embedded_gguf(), n_ctx=256, parallel=2)
            for name in names}


def run_on_pool(check: Callable[[ModelPool], Awaitable[None]],
                models: dict[str, LlamaCppEngine], policy: PoolPolicy | None = None) -> None:
    """Run ``check(pool)`` on an event loop, then close the pool's engines (pass or fail)."""
    async def main() -> None:
        pool = ModelPool(models, policy)
        try:
            await check(pool)
        finally:
            for entry in pool.models.values():
                entry.engine.close()

    asyncio.run(main())


def test_the_estimate_counts_the_kv_cache_of_every_parallel_sequence() -> None:
    one = memory_estimate(LlamaCppEngine("a", embedded_gguf(), n_ctx=1024, parallel=1))
    four = memory_estimate(LlamaCppEngine("a", embedded_gguf(), n_ctx=1024, parallel=4))
    weights = embedded_gguf().stat().st_size
    # SmolLM2-135M: 30 layers x 3 KV heads x 64 dims, K and V in f16: 23,040 bytes a cell.
    assert four - one == 3 * 1024 * 23_040
    assert weights * 0.8 < one < weights + 200_000_000


def test_two_concurrent_first_requests_share_one_load() -> None:
    async def check(pool: ModelPool) -> None:
        first, second = await asyncio.gather(pool.ready("a"), pool.ready("a"))
        assert first is second and first.loaded
        assert pool.model("a").loads == 1 and pool.model("a").state == "loaded"
        await pool.ready("a")
        assert pool.model("a").loads == 1

    run_on_pool(check, engines("a"), PoolPolicy(on_demand=True))


def test_without_load_on_demand_an_unloaded_model_is_refused_with_the_way_to_load_it() -> None:
    async def check(pool: ModelPool) -> None:
        with pytest.raises(Unavailable, match="POST /v1/models/a/load"):
            await pool.ready("a")
        await pool.load("a")
        assert (await pool.ready("a")).loaded

    run_on_pool(check, engines("a"))


def test_loading_beyond_the_budget_unloads_the_least_recently_used_idle_model() -> None:
    models = engines("a", "b", "c")
    size = memory_estimate(models["a"])

    async def check(pool: ModelPool) -> None:
        await pool.ready("a")
        await pool.ready("b")
        await pool.ready("a")  # b is now the least recently used
        assert await pool.load("c") == ["b"]
        assert {n: m.state for n, m in pool.models.items()} == {
            "a": "loaded", "b": "unloaded", "c": "loaded"}
        assert not models["b"].loaded and pool.loaded_bytes() == 2 * size
        # a model in use is never unloaded: with a held, loading b unloads c
        with pool.hold("a"):
            assert await pool.load("b") == ["c"]
            with pool.hold("b"), pytest.raises(OverBudget) as refused:
                await pool.load("c")
        assert refused.value.memory == {"needed": size, "budget": 2 * size + size // 2,
                                        "loaded": 2 * size}
        assert "with requests in flight" in refused.value.message

    run_on_pool(check, models, PoolPolicy(on_demand=True, budget=2 * size + size // 2))


def test_a_model_larger_than_the_budget_is_refused_with_the_figures() -> None:
    async def check(pool: ModelPool) -> None:
        with pytest.raises(OverBudget) as refused:
            await pool.ready("a")
        size = pool.model("a").memory_bytes
        assert refused.value.memory == {"needed": size, "budget": 1_000_000, "loaded": 0}
        assert refused.value.status == 503 and "cannot load even alone" in refused.value.message
        assert pool.model("a").state == "unloaded"

    run_on_pool(check, engines("a"), PoolPolicy(on_demand=True, budget=1_000_000))


def test_unload_is_refused_while_a_stream_holds_the_model_and_works_after() -> None:
    models = engines("a")

    async def check(pool: ModelPool) -> None:
        engine = await pool.ready("a")
        params = SamplingParams(max_tokens=4, temperature=0)
        stream = pool.held("a", engine.stream_completion("Hello", params))
        with pytest.raises(Conflict):
            await pool.unload("a")
        events = [event async for event in stream]
        assert events and pool.model("a").in_flight == 0
        # dropped before its first step: the hold ends with it
        pool.held("a", engine.stream_completion("Hello", params))
        gc.collect()
        assert pool.model("a").in_flight == 0
        await pool.unload("a")
        assert pool.model("a").state == "unloaded" and not models["a"].loaded

    run_on_pool(check, models, PoolPolicy(on_demand=True))


def test_keep_alive_unloads_an_idle_model_and_the_next_request_loads_it_again() -> None:
    async def check(pool: ModelPool) -> None:
        expiring = asyncio.create_task(pool.expire_idle())
        try:
            await pool.ready("a")
            with pool.hold("a"):  # busy: not idle, however long
                await asyncio.sleep(0.7)
                assert pool.model("a").state == "loaded"
            started = time.monotonic()
            while pool.model("a").state == "loaded" and time.monotonic() - started < 5:
                await asyncio.sleep(0.05)
            assert pool.model("a").state == "unloaded"
            assert 0.3 < time.monotonic() - started < 2
            await pool.ready("a")
            assert pool.model("a").loads == 2
        finally:
            expiring.cancel()

    run_on_pool(check, engines("a"), PoolPolicy(on_demand=True, keep_alive=0.4))


def test_a_request_waits_for_a_load_at_most_load_timeout_and_the_load_goes_on() -> None:
    async def check(pool: ModelPool) -> None:
        with pytest.raises(Unavailable, match="still loading after"):
            await pool.ready("a")
        assert pool.model("a").state == "loading"
        await pool.load("a")  # the same load, finished
        assert pool.model("a").loads == 1 and (await pool.ready("a")).loaded

    run_on_pool(check, engines("a"), PoolPolicy(on_demand=True, load_timeout=0.001))


def test_a_request_during_an_unload_gets_the_model_loaded_again_never_the_closing_one() -> None:
    async def check(pool: ModelPool) -> None:
        await pool.ready("a")
        unloading = asyncio.create_task(pool.unload("a"))
        await asyncio.sleep(0)  # the unload has begun: its close runs on a thread
        assert pool.model("a").state == "unloaded"
        with pytest.raises(Unavailable):
            pool.hold("a").__enter__()
        engine = await pool.ready("a")
        await unloading
        assert engine.loaded and pool.model("a").loads == 2
        assert pool.model("a").state == "loaded"

    run_on_pool(check, engines("a"), PoolPolicy(on_demand=True))


def test_model_entries_name_their_models_and_two_with_one_name_are_refused(
        tmp_path: Path) -> None:
    gguf = embedded_gguf()
    named = create_engines(Settings(home=tmp_path, model=f"{EMBEDDED_NAME},second={gguf}"))
    assert [e.info.id for e in named] == [EMBEDDED_NAME, "second"]
    assert not any(e.loaded for e in named)
    with pytest.raises(BadRequest, match="NAME=PATH") as twice:
        create_engines(Settings(home=tmp_path, model=[str(gguf), str(gguf)]))
    assert twice.value.param == "model"
    odd = tmp_path / "a=b.gguf"  # an existing file whose name holds '=' is a path
    odd.symlink_to(gguf)
    assert served_as(str(odd)) == (None, str(odd))
    assert served_as("x=/some/where.gguf") == ("x", "/some/where.gguf")


def test_a_request_cancelled_as_its_model_load_finishes_is_cancelled() -> None:
    """The waiter is cancelled in the very loop turn its load completes (a client that
    left, a drain cut): it must end cancelled, not carry on with the engine (as
    ``wait_for`` on Python 3.11 let it, returning the load's result)."""
    async def check(pool: ModelPool) -> None:
        waiting = asyncio.create_task(pool.ready("a"))
        await asyncio.sleep(0)  # it has started the load and waits for it
        load = pool.model("a")._loading
        assert load is not None and not waiting.done()
        # Registered after shield()'s callback, so it runs in the same turn, just after
        # the future the waiter awaits got the load's result.
        load.add_done_callback(lambda _: waiting.cancel())
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert load.done() and pool.model("a").state == "loaded"  # the load itself stands

    run_on_pool(check, engines("a"), PoolPolicy(on_demand=True))
