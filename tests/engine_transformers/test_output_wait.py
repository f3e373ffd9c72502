"""A generation waiting for its next output leaves when cancelled, even when the
output arrives in the same turn of the event loop: an event stream goes out from
the request's own task, and a client leaving cancels it once (no task group
cancelling it again), so a cancellation lost there kept the model generating for
nobody until its end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from starchart.engines.transformers import TransformersEngine


def test_a_cancel_as_the_next_output_arrives_is_not_lost(tiny: TransformersEngine) -> None:
    async def scenario() -> None:
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        waiting = asyncio.create_task(tiny._next_output(None, outputs))
        await asyncio.sleep(0)  # it waits for an output
        waiting.cancel()  # the client leaves ...
        outputs.put_nowait("a token")  # ... as a token comes
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())
