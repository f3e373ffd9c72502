"""The terminal's /params checks values with the API's own fields."""

from __future__ import annotations

import io

import pytest

from starchart.chat.terminal import TerminalChat
from starchart.services.chat import ChatService
from starchart.settings import Settings


@pytest.fixture
def chat(settings: Settings) -> TerminalChat:
    return TerminalChat(ChatService(settings), io.StringIO())


def said(chat: TerminalChat) -> str:
    return chat.out.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("line, param", [
    ("/params temperature -1", "temperature"),
    ("/params temperature=3", "temperature"),
    ("/params top_p=0", "top_p"),
    ("/params max_tokens=0", "max_tokens"),
    ("/params temperature=warm", "temperature"),
    ("/params ignore_eos=maybe", "ignore_eos"),
])
def test_out_of_range_values_are_refused(chat: TerminalChat, line: str, param: str) -> None:
    before = chat.params
    chat.command(line)
    assert f"invalid value for '{param}'" in said(chat) and "nothing changed" in said(chat)
    assert chat.params == before


def test_valid_values_change_only_what_is_named(chat: TerminalChat) -> None:
    chat.command("/params temperature 0.7 max_tokens=256 ignore_eos=yes")
    assert chat.params == chat.service.defaults.replace(temperature=0.7, max_tokens=256,
                                                        ignore_eos=True)
    chat.command("/params top_k=3")
    assert chat.params.temperature == 0.7 and chat.params.top_k == 3


def test_unknown_parameters_are_named(chat: TerminalChat) -> None:
    chat.command("/params warmth=1")
    assert "unknown parameter 'warmth'" in said(chat)
