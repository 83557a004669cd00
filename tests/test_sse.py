from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flask_chatstream._sse import SSEParser

STREAM = (
    b'data: {"a":1}\n\n'
    b": keep-alive comment\n\n"
    b"event: message\nid: 7\ndata: first\ndata: second\n\n"
    b'data: {"text":"\xc3\xa9\xe6\x97\xa5"}\r\n\r\n'
    b"data:no-space\r\rdata: [DONE]\n\n"
)
EXPECTED = [b'{"a":1}', b"first\nsecond", b'{"text":"\xc3\xa9\xe6\x97\xa5"}', b"no-space", b"[DONE]"]


def parse_in_pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    parser = SSEParser()
    out: list[bytes] = []
    start = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        out += parser.feed(data[start:cut])
        start = cut
    return out + parser.close()


def test_whole_stream() -> None:
    assert parse_in_pieces(STREAM, []) == EXPECTED


def test_every_single_byte_split() -> None:
    assert parse_in_pieces(STREAM, list(range(len(STREAM)))) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    assert parse_in_pieces(STREAM, cuts) == EXPECTED


def test_crlf_split_between_cr_and_lf_is_one_line_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\r") == []
    assert parser.feed(b"\n\r") == []
    assert parser.feed(b"\n") == [b"x"]


def test_event_without_final_blank_line_is_flushed_on_close() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: last") == []
    assert parser.close() == [b"last"]
