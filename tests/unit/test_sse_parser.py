"""The relay's server-sent-events reader (engines/sse.py), fed bytes as they arrive."""

from __future__ import annotations

import pytest

from starchart.engines.sse import MAX_EVENT_BYTES, EventParser, EventTooLarge


def events_of(*chunks: bytes, end: bool = False) -> list[str]:
    parser = EventParser()
    for chunk in chunks:
        parser.feed(chunk)
    if end:
        parser.end()
    return list(parser.events)


STREAM = (b'data: {"a": 1}\n\n'
          b": keep-alive ping\n\n"
          b"event: message\nid: 7\nretry: 100\ndata: two\ndata:  lines\n\n"
          b"data:no-space\n\n"
          b"data: [DONE]\n\n")
EXPECTED = ['{"a": 1}', "two\n lines", "no-space", "[DONE]"]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_gives_the_same_events(newline: bytes) -> None:
    assert events_of(STREAM.replace(b"\n", newline)) == EXPECTED


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_split_anywhere_gives_the_same_events(newline: bytes) -> None:
    # Every cut, including between the CR and LF of a CRLF and inside a UTF-8 character.
    whole = (STREAM + "data: café ☕\n\n".encode()).replace(b"\n", newline)
    for cut in range(1, len(whole)):
        assert events_of(whole[:cut], whole[cut:]) == [*EXPECTED, "café ☕"], cut


def test_byte_by_byte() -> None:
    assert events_of(*(bytes([b]) for b in STREAM.replace(b"\n", b"\r\n"))) == EXPECTED


def test_an_event_is_given_only_once_its_blank_line_arrives() -> None:
    parser = EventParser()
    parser.feed(b"data: one\n")
    assert not parser.events
    parser.feed(b"\n")
    assert list(parser.events) == ["one"]


def test_the_body_ending_completes_an_open_event() -> None:
    assert events_of(b"data: last", end=True) == ["last"]
    assert events_of(b"data: last\r", end=True) == ["last"]
    assert events_of(b": only a comment\n", end=True) == []


def test_an_event_past_the_limit_is_refused_after_the_events_before_it() -> None:
    parser = EventParser()
    with pytest.raises(EventTooLarge):
        parser.feed(b"data: one\n\ndata: " + b"x" * MAX_EVENT_BYTES)
    assert list(parser.events) == ["one"]
    parser = EventParser()
    with pytest.raises(EventTooLarge):  # many lines, one event
        for _ in range(MAX_EVENT_BYTES // 2**16 + 1):
            parser.feed(b"data: " + b"x" * 2**16 + b"\n")
    # Up to the limit, in pieces: one event, the same bytes.
    parser = EventParser()
    piece = b"y" * 2**16
    parser.feed(b"data: ")
    for _ in range(MAX_EVENT_BYTES // len(piece) - 1):
        parser.feed(piece)
    parser.feed(b"\n\n")
    assert list(parser.events) == ["y" * (MAX_EVENT_BYTES - len(piece))]
