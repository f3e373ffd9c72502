from starchart.engines.textstream import TextStream


def feed_all(stream: TextStream, pieces: list[bytes]) -> list[str]:
    return [stream.feed(p) for p in pieces]


def test_no_stop_passes_through() -> None:
    stream = TextStream()
    assert feed_all(stream, [b"Hel", b"lo"]) == ["Hel", "lo"]
    assert stream.flush() == ""


def test_multibyte_character_split_across_tokens() -> None:
    data = "中文🙂".encode()
    stream = TextStream()
    out = "".join(stream.feed(data[i:i + 1]) for i in range(len(data)))
    assert out == "中文🙂"
    assert "\ufffd" not in out


def test_stop_spanning_tokens_ends_text_before_it() -> None:
    stream = TextStream(["END"])
    out = feed_all(stream, [b"abc E", b"N", b"D more"])
    assert "".join(out) == "abc "
    assert stream.stopped
    assert stream.feed(b"x") == "" and stream.flush() == ""


def test_partial_stop_is_held_back_then_released() -> None:
    stream = TextStream(["END"])
    assert stream.feed(b"ab E") == "ab "
    assert stream.feed(b"N") == ""
    assert stream.feed(b"x") == "ENx"
    assert not stream.stopped


def test_held_back_text_released_at_flush() -> None:
    stream = TextStream(["STOP"])
    assert stream.feed(b"go ST") == "go "
    assert stream.flush() == "ST"


def test_earliest_of_several_stops_wins() -> None:
    stream = TextStream(["bb", "a"])
    assert stream.feed(b"xxbba") == "xx"


def test_cut_multibyte_at_end_is_dropped_not_replaced() -> None:
    stream = TextStream()
    assert stream.feed("é".encode()[:1]) == ""
    assert stream.flush() == ""
