"""One conversation turn over a WebSocket, while listening to the client.

The client may send ``{"type": "stop"}`` (stop this reply), its next message
(kept for when this reply is done) or go away (generation stops; what was
said is stored).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import WebSocket

from starchart.api import shutdown
from starchart.api.conversation_protocol import TurnInfo, WsDelta, WsDone, WsError, WsQueue
from starchart.api.protocol import WireModel
from starchart.engines.base import Finish, TextDelta
from starchart.errors import StarchartError
from starchart.services.conversations import Queued, Turn


async def send(websocket: WebSocket, frame: WireModel) -> None:
    await websocket.send_text(frame.wire())


def is_stop(raw: str) -> bool:
    try:
        frame = json.loads(raw)
    except ValueError:
        return False
    return isinstance(frame, dict) and frame.get("type") == "stop"


async def stream_turn(websocket: WebSocket, turn: Turn, info: TurnInfo,
                      pending: list[str]) -> None:
    """Send one turn's frames while listening for stop, disconnect or the next message."""
    with shutdown.busy():  # a SIGTERM waits for this turn (until its deadline)
        await _stream_turn(websocket, turn, info, pending)


async def _stream_turn(websocket: WebSocket, turn: Turn, info: TurnInfo,
                       pending: list[str]) -> None:
    listener = asyncio.ensure_future(websocket.receive_text())
    events = turn.events()
    step: asyncio.Future[Any] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(events))
            while not step.done():
                await asyncio.wait({step, listener}, return_when=asyncio.FIRST_COMPLETED)
                if listener.done():
                    raw = listener.result()  # raises WebSocketDisconnect if the client left
                    if is_stop(raw):
                        turn.stop()
                    else:
                        pending.append(raw)  # the next message, once this reply is done
                    listener = asyncio.ensure_future(websocket.receive_text())
            try:
                event = step.result()
            except StopAsyncIteration:  # stopped before the end: say so, it is stored
                await send(websocket, WsDone.of(None, info))
                return
            except StarchartError as exc:
                await send(websocket, WsError.of(exc))
                return
            if isinstance(event, TextDelta):
                await send(websocket, WsDelta(content=event.text))
            elif isinstance(event, Queued):
                await send(websocket, WsQueue(position=event.position))
            elif isinstance(event, Finish):
                await send(websocket, WsDone.of(event, info))
                return
    finally:
        if listener.done() and not listener.cancelled() and listener.exception() is None:
            pending.append(listener.result())
        listener.cancel()
        if step is not None and not step.done():
            step.cancel()
            await asyncio.wait({step})
        await events.aclose()  # stops generation if the reply is not complete
