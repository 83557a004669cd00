from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flask_chatstream._wire.sse import SSEParser

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


def test_a_line_that_never_ends_is_capped_and_parsed_in_linear_time() -> None:
    parser = SSEParser(max_event_bytes=1024 * 1024)
    assert parser.feed(b'data: {"ok":1}\n\ndata: ') == [b'{"ok":1}']
    for _ in range(64):  # 4 MB in 64 KB reads, never a newline: each read costs a list append
        assert parser.feed(b"x" * 65536) == []
        if parser.too_large:
            break
    assert parser.too_large
    assert parser.feed(b"\n\ndata: after\n\n") == []  # nothing more once it has given up


def test_events_before_the_oversized_one_in_the_same_read_are_kept() -> None:
    parser = SSEParser(max_event_bytes=100)
    assert parser.feed(b"data: a\n\ndata: b\n\ndata: " + b"x" * 200 + b"\n\n") == [b"a", b"b"]
    assert parser.too_large


def test_many_data_lines_add_up_against_the_cap() -> None:
    parser = SSEParser(max_event_bytes=100)
    assert parser.feed(b"data: 0123456789\n" * 20) == []
    assert parser.too_large
