"""`starchart chat --conversation ID`: resume a stored conversation in the terminal.

Turns go through ``services.conversations`` like the server's, so what is said here is
stored the same way (and shows up over the API).
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from starchart.chat.terminal import TerminalChat
from starchart.errors import NotFound
from starchart.services.chat import ChatService
from starchart.services.conversations import ConversationChat
from starchart.store import Store
from starchart.store.conversations import LOCAL

REPLAYED = 6  # messages shown when resuming


class StoredTerminalChat(TerminalChat):
    def __init__(self, service: ChatService, store: Store, conversation_id: str,
                 out: TextIO = sys.stdout) -> None:
        super().__init__(service, out)
        self.store = store
        self.conversation_id = conversation_id
        self.turns = ConversationChat(service, store.conversations)
        try:
            conv = store.conversations.get(conversation_id, LOCAL)
        except NotFound as exc:
            recent = ", ".join(c.id for c in store.conversations.list(LOCAL, limit=5))
            raise NotFound(f"{exc.message} in {store.db.url}"
                           + (f" (most recent: {recent})" if recent else ""),
                           param="conversation") from None
        self.title = conv.title
        if conv.system_prompt is not None:
            self.system = conv.system_prompt
        self.history = [{"role": m.role, "content": m.content} for m in conv.messages]

    def replay(self) -> None:
        shown = self.history[-REPLAYED:]
        if len(self.history) > len(shown):
            print(f"[... {len(self.history) - len(shown)} earlier messages]", file=self.out)
        for message in shown:
            lead = "> " if message["role"] == "user" else ""
            print(f"{lead}{message['content']}\n", file=self.out)

    async def answer(self, question: str) -> str:
        self.history.append({"role": "user", "content": question})
        turn = await self.turns.start(self.conversation_id, LOCAL, question, self.params)
        try:
            return await self.show(turn.events())
        except asyncio.CancelledError:  # Ctrl-C: store what was said before leaving
            turn.stop()
            await turn.done()
            raise

    def command(self, line: str) -> bool:
        name, _, rest = line.partition(" ")
        if name == "/reset":
            print("[a stored conversation keeps its history: run `starchart chat` without"
                  " --conversation for a fresh one]", file=self.out)
            return True
        if name == "/system":
            self.system = rest.strip()
            self.store.conversations.update(self.conversation_id, LOCAL,
                                            system_prompt=self.system)
            print(f"[system prompt of this conversation set to {self.system!r}]",
                  file=self.out)
            return True
        return super().command(line)
