"""Durable turns in-process: the service's real stream, a real SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import closing

import pytest

from starchart.services.chat import ChatService
from starchart.services.conversations import ConversationChat
from starchart.settings import Settings
from starchart.store import Store
from starchart.store.conversations import LOCAL


@pytest.fixture
def store(store_settings: Settings) -> Iterator[Store]:
    with closing(Store.open(store_settings)) as s:
        yield s


def test_a_turn_stopped_before_it_starts_frees_the_conversation(
        service: ChatService, store: Store) -> None:
    conv = store.conversations.create(None, system_prompt="")
    params = service.defaults.replace(temperature=0, max_tokens=4)

    async def go() -> None:
        chat = ConversationChat(service, store.conversations)
        turn = await chat.start(conv.id, None, "hi", params)
        turn.stop()  # before its task ever ran
        await turn.done()
        after = await asyncio.wait_for(chat.start(conv.id, None, "again", params), 10)
        assert not (await after.result()).incomplete
        assert len(store.conversations.locks) == 0  # no lock left behind

    asyncio.run(go())
    messages = store.conversations.get(conv.id, LOCAL).messages
    assert [(m.role, m.incomplete, m.finish_reason) for m in messages] == [
        ("user", False, None), ("assistant", True, "cancelled"),
        ("user", False, None), ("assistant", False, messages[-1].finish_reason)]
