"""`starchart chat`: a streaming terminal chat on the same service as the server."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, TextIO

from starchart.api.bodies import parse
from starchart.api.protocol import SamplingFields
from starchart.engines import create_engine
from starchart.engines.base import Finish, SamplingParams, TextDelta
from starchart.errors import StarchartError
from starchart.services.chat import ChatService
from starchart.settings import Settings

if TYPE_CHECKING:  # imported lazily: the store comes in only for stored chats
    from starchart.services.conversations import TurnEvent

HELP = """commands:
  /reset            forget the conversation (keeps the system prompt)
  /system TEXT      set the system prompt (empty TEXT clears it) and reset
  /params           show the generation parameters
  /params K=V ...   change them, e.g. /params temperature=0.7 max_tokens=256
                    (checked as the API checks them)
  /exit             leave (Ctrl-D too); Ctrl-C stops the current answer"""

# What /params may change; each is validated by the API's own field (SamplingFields).
PARAMS = ("temperature", "top_p", "top_k", "min_p", "max_tokens", "repetition_penalty",
          "presence_penalty", "frequency_penalty", "seed", "ignore_eos")


_WORDS = {"yes": True, "on": True, "true": True, "no": False, "off": False, "false": False}


def _value(text: str) -> object:
    """A typed value: the API's fields are strict ("0.7" is not a number there)."""
    if text.lower() in _WORDS:
        return _WORDS[text.lower()]
    try:
        return json.loads(text)
    except ValueError:
        return text


def _pairs(words: list[str]) -> list[tuple[str, str]]:
    """``K=V`` and ``K V`` alike."""
    pairs, i = [], 0
    while i < len(words):
        key, eq, value = words[i].partition("=")
        if not eq and i + 1 < len(words):
            i += 1
            value = words[i]
        pairs.append((key, value))
        i += 1
    return pairs


class TerminalChat:
    def __init__(self, service: ChatService, out: TextIO = sys.stdout) -> None:
        self.service = service
        self.out = out
        self.system = service.settings.system_prompt
        self.params: SamplingParams = service.defaults
        self.history: list[dict[str, str]] = []

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, *self.history]

    async def answer(self, question: str) -> str:
        """Stream one answer to ``out``; a cancelled answer keeps what was said."""
        self.history.append({"role": "user", "content": question})
        return await self.show(self.service.stream_chat(None, self.messages(), self.params))

    async def show(self, events: AsyncIterator[TurnEvent]) -> str:
        """Print an answer as it streams and add it to the history, even if cut short."""
        parts: list[str] = []
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                    self.out.write(event.text)
                    self.out.flush()
                elif isinstance(event, Finish) and event.reason == "length":
                    print("\n[answer cut at max_tokens]", file=sys.stderr)
        finally:
            self.history.append({"role": "assistant", "content": "".join(parts)})
        return "".join(parts)

    def command(self, line: str) -> bool:
        """Run a /command; False means leave."""
        name, _, rest = line.partition(" ")
        if name in ("/exit", "/quit"):
            return False
        if name == "/reset":
            self.history.clear()
            print("[conversation reset]", file=self.out)
        elif name == "/system":
            self.system = rest.strip()
            self.history.clear()
            print(f"[system prompt set to {self.system!r}; conversation reset]", file=self.out)
        elif name == "/params":
            self._params(rest.split())
        else:
            print(HELP, file=self.out)
        return True

    def _params(self, words: list[str]) -> None:
        changes = dict(_pairs(words))
        unknown = [key for key in changes if key not in PARAMS]
        if unknown:
            print(f"unknown parameter {unknown[0]!r}; known: {', '.join(PARAMS)}", file=self.out)
            return
        try:
            checked = parse(SamplingFields, {k: _value(v) for k, v in changes.items()})
        except StarchartError as exc:  # the API's 400 message, naming the parameter
            print(f"{exc.message}; nothing changed", file=self.out)
            return
        self.params = self.params.replace(**{key: getattr(checked, key) for key in changes})
        shown = {k: getattr(self.params, k) for k in PARAMS}
        print("  ".join(f"{k}={v}" for k, v in shown.items()), file=self.out)


def _load(settings: Settings, quiet: bool) -> ChatService:
    engine = create_engine(settings)
    if not quiet:
        print(f"loading {engine.info.id} ...", file=sys.stderr, flush=True)
    engine.load()
    return ChatService(settings, {engine.info.id: engine})


def run_chat(settings: Settings, prompt: str | None = None,
             conversation: str | None = None) -> int:
    service = _load(settings, quiet=prompt is not None)
    try:
        return _chat(service, settings, prompt, conversation)
    finally:
        # Engines own threads (transformers' continuous-batching loop is not a
        # daemon): stopped here, or the interpreter waits for them at exit.
        for engine in service.engines.values():
            engine.close()


def _chat(service: ChatService, settings: Settings, prompt: str | None,
          conversation: str | None) -> int:
    if conversation is not None:
        from starchart.chat.stored import StoredTerminalChat
        from starchart.store import Store

        stored = StoredTerminalChat(service, Store.open(settings), conversation)
        if prompt is None:
            stored.replay()
        chat: TerminalChat = stored
    else:
        chat = TerminalChat(service)
    with asyncio.Runner() as runner:
        if prompt is not None:
            runner.run(chat.answer(prompt))
            print()
            return 0
        print(f"chatting with {service.default_model} — /help for commands, /exit to leave",
              file=sys.stderr)
        while True:
            try:
                line = input("\n> ")
            except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the prompt: leave
                print()
                return 0
            if not line.strip():
                continue
            if line.startswith("/"):
                if not chat.command(line.strip()):
                    return 0
                continue
            try:
                runner.run(chat.answer(line))
                print()
            except KeyboardInterrupt:
                print("\n[stopped]", file=sys.stderr)
            except StarchartError as exc:
                chat.history.pop()  # the question that failed
                print(f"\nerror: {exc.message}", file=sys.stderr)
