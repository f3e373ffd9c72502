"""`starchart keys`, `serve` refusing an exposed bind, `chat --conversation`."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from starchart.cli import main
from starchart.server import exposure_refusal, is_loopback
from starchart.services.chat import ChatService
from starchart.settings import Settings
from starchart.store import Store
from starchart.store.conversations import LOCAL
from starchart.store.keys import KeyCheck

from tests.conftest import free_port


def test_keys_create_prints_the_key_once_and_list_and_revoke_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(tmp_path)]
    assert main(["keys", "create", "--name", "laptop", *home]) == 0
    out = capsys.readouterr()
    secret = out.out.strip()
    assert secret.startswith("sk-star-") and "\n" not in secret  # stdout: the key alone
    assert "cannot be shown again" in out.err
    with closing(Store.open(Settings(home=tmp_path))) as store:
        key_id = asyncio.run(KeyCheck(store.keys).check(secret)).key_id
    assert key_id is not None

    assert main(["keys", "list", *home]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "laptop" in listed and "active" in listed
    assert secret not in listed and secret[:14] in listed

    assert main(["keys", "revoke", key_id, *home]) == 0
    assert main(["keys", "list", *home]) == 0
    assert "revoked" in capsys.readouterr().out
    with closing(Store.open(Settings(home=tmp_path))) as store:
        assert not asyncio.run(KeyCheck(store.keys).check(secret)).granted
    assert main(["keys", "revoke", "key_nope", *home]) == 1


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.2", "example.com"]))


def test_serving_on_a_non_loopback_address_without_keys_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "STARCHART_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "starchart", "serve", "--host", "0.0.0.0",
         "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in done.stderr
    assert "keys create" in done.stderr and "--insecure-no-auth" in done.stderr
    assert "serving" not in done.stdout


def test_exposed_bind_is_allowed_with_a_key_or_with_insecure_no_auth_and_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exposed = Settings(home=tmp_path, host="0.0.0.0")
    assert exposure_refusal(Settings(home=tmp_path)) is None  # loopback: open, as before
    assert exposure_refusal(exposed) is not None
    assert exposure_refusal(exposed.model_copy(update={"insecure_no_auth": True})) is None
    assert "WARNING" in capsys.readouterr().err
    with closing(Store.open(exposed)) as store:
        store.keys.create()
    assert exposure_refusal(exposed) is None
    assert capsys.readouterr().err == ""


FRANCE_Q = "What is the capital of France?"


def test_chat_resumes_a_stored_conversation_and_stores_new_turns(
        service: ChatService, settings: Settings) -> None:
    from starchart.chat.stored import StoredTerminalChat

    with closing(Store.open(settings)) as store:
        conv = store.conversations.create(None, system_prompt="")
        store.conversations.add_message(conv.id, None, "user", "My name is Ada.")
        store.conversations.add_message(conv.id, None, "assistant", "Hello Ada!")
        out = io.StringIO()
        chat = StoredTerminalChat(service, store, conv.id, out=out)
        chat.params = chat.params.replace(temperature=0, max_tokens=32)
        chat.replay()
        assert "> My name is Ada." in out.getvalue() and "Hello Ada!" in out.getvalue()
        answer = asyncio.run(chat.answer(FRANCE_Q))
        assert "Paris" in answer
        messages = store.conversations.get(conv.id, LOCAL).messages
        assert [m.content for m in messages][2:] == [FRANCE_Q, answer]
        assert not messages[-1].incomplete
        # The stored history went into the prompt: more tokens than the question alone.
        assert messages[-1].usage["prompt_tokens"] > 30


def test_ctrl_c_in_a_stored_chat_keeps_the_partial_answer(
        service: ChatService, settings: Settings) -> None:
    from starchart.chat.stored import StoredTerminalChat

    with closing(Store.open(settings)) as store:
        conv = store.conversations.create(None, system_prompt="")
        out = io.StringIO()
        chat = StoredTerminalChat(service, store, conv.id, out=out)
        chat.params = chat.params.replace(ignore_eos=True, max_tokens=1500)

        async def interrupted() -> None:
            task = asyncio.create_task(chat.answer("Tell me a story."))
            while len(out.getvalue()) < 10:
                await asyncio.sleep(0.01)
            task.cancel()  # what asyncio.Runner does on Ctrl-C
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(interrupted())
        reply = store.conversations.get(conv.id, LOCAL).messages[-1]
        assert reply.incomplete and reply.finish_reason == "cancelled"
        assert reply.content.startswith(out.getvalue()[:10])


def test_chat_with_an_unknown_conversation_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "STARCHART_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "starchart", "chat", "--conversation",
                           "conv_nope", "-p", "hi"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert "no conversation with id 'conv_nope'" in done.stderr
