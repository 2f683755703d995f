"""The HTTP/1.1 reader at its edges, beyond tests/unit/test_h1.py: each cap holds exactly at
its size, junk is counted across pieces, framing is right when a body comes in pieces, and
every malformed answer raises a ProtocolError whose message says what was wrong (what a user
reads in ``on_error`` and the log when a proxy garbles an answer)."""

from __future__ import annotations

import pytest

from koala_async._h1 import (
    MAX_BODY,
    MAX_HEAD,
    NEED_DATA,
    End,
    ProtocolError,
    Reader,
    Response,
    TLSAnswer,
)

OK = b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"ok":true}'
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def _events(reader: Reader, *pieces: bytes) -> list[Response | End]:
    """Feed ``pieces`` (``b""``: the peer's end) while the reader needs data; return the
    events, stopping at the End or when the pieces run out."""
    events: list[Response | End] = []
    feed = iter(pieces)
    while not events or not isinstance(events[-1], End):
        event = reader.next_event()
        if event is NEED_DATA:
            piece = next(feed, None)
            if piece is None:
                break
            reader.feed(piece)
        else:
            assert isinstance(event, Response | End)
            events.append(event)
    return events


def _read(*pieces: bytes, after_answer: bool = False) -> tuple[Response, End, Reader]:
    reader = Reader(after_answer=after_answer)
    events = _events(reader, *pieces)
    assert len(events) == 2, events
    response, end = events
    assert isinstance(response, Response)
    assert isinstance(end, End)
    return response, end, reader


@pytest.mark.parametrize(
    ("pieces", "message"),
    [
        ((b"HTTP/1.1 200 OK\r\nContent-Le", b""), "the connection ended within the response head"),
        (
            (b"HTTP/1.1 500 Oops\r\nContent-Length: 9\r\n\r\nxx", b""),
            "the connection ended within the body",
        ),
        ((CHUNKED + b"5\r\nab", b""), "the connection ended within the chunked body"),
        ((CHUNKED + b"5", b""), "the connection ended within the chunked body"),
        ((CHUNKED + b"0\r\nX: 1", b""), "the connection ended within the trailers"),
        ((b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD,), "response head too large"),
        ((b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n",), "response head too large"),
        ((b"HTTP/1.1 101 Switching Protocols\r\n\r\n",), "101 Switching Protocols to a POST"),
        ((b"HTTP/1.1 100 Continue\r\n\r\n" * 17,), "too many interim responses"),
        ((CHUNKED + b"f" * (MAX_HEAD + 1),), "chunk size line too long"),
        ((CHUNKED + b"zz\r\n",), "bad chunk size b'zz'"),
        ((CHUNKED + b"X\r\n",), "bad chunk size b'X'"),
        ((CHUNKED + b"q" * 30 + b"\r\n",), f"bad chunk size {b'q' * 20!r}"),
        ((CHUNKED + b"2\r\nabXY",), "chunk not followed by CRLF"),
        ((CHUNKED + b"0\r\nX: " + b"a" * MAX_HEAD,), "trailers too large"),
        ((CHUNKED + b"0\r\n" + b"X: a\r\n" * (MAX_HEAD // 4 + 1),), "trailers too large"),
        ((b"\x16\x03\x03\x00\x10\r\n\r\n",), "a TLS record where an HTTP answer belongs"),
        ((b"HTTP/2 200 OK\r\n\r\n",), "bad status line b'HTTP/2 200 OK'"),
        (
            (b"HTTP/1.1 2OO " + b"r" * 60 + b"\r\n\r\n",),
            f"bad status line {b'HTTP/1.1 2OO ' + b'r' * 27!r}",
        ),
        ((b"HTTP/1.1 099 Low\r\n\r\n",), "bad status 99"),
        (
            (b"HTTP/1.1 200 OK\r\nno colon " + b"h" * 60 + b"\r\n\r\n",),
            f"bad header line {b'no colon ' + b'h' * 31!r}",
        ),
        (
            (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9x" * 30 + b"\r\n\r\n",),
            f"bad Content-Length {b'9x' * 20!r}",
        ),
    ],
)
def test_a_malformed_answer_says_what_was_wrong(pieces: tuple[bytes, ...], message: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        _events(Reader(), *pieces)
    assert str(raised.value) == message


def test_junk_on_a_reused_connection_says_no_status_line() -> None:
    with pytest.raises(ProtocolError) as raised:
        _events(Reader(after_answer=True), b"x" * (MAX_HEAD + 10))
    assert str(raised.value) == "no status line in the answer"


def test_only_a_tls_record_is_called_one() -> None:
    for start in (b"\x16garbage\r\n\r\n", b"H\x03TTP/1.1 200 OK\r\n\r\n"):
        with pytest.raises(ProtocolError) as raised:
            _events(Reader(), start, b"")
        assert not isinstance(raised.value, TLSAnswer), start


@pytest.mark.parametrize(
    "pieces",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab", b"cd"),
        (b"HTTP/1.1 200 OK\r\n\r\nab", b"cd", b""),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (MAX_BODY + 1),),
        (CHUNKED + b"4\r\nabcd\r\n0\r\n\r\n",),
    ],
    ids=["length-in-pieces", "to-close", "to-close-cut", "chunked"],
)
def test_a_finished_reader_refuses_more_questions_however_the_body_was_framed(
    pieces: tuple[bytes, ...],
) -> None:
    _, _, reader = _read(*pieces)
    with pytest.raises(ProtocolError) as raised:
        reader.next_event()
    assert str(raised.value) == "the response was read to its end already"


def test_a_head_of_exactly_the_cap_is_read() -> None:
    head = b"HTTP/1.1 204 No Content\r\nX: "
    head += b"a" * (MAX_HEAD - len(head))
    assert len(head) == MAX_HEAD
    response, end, _ = _read(head, b"\r\n\r\n")
    assert (response.status, end) == (204, End(b"", True))
    response, end, _ = _read(head + b"\r\n\r\n")
    assert (response.status, end) == (204, End(b"", True))


def test_junk_of_exactly_the_cap_is_skipped_on_a_reused_connection() -> None:
    _, end, _ = _read(b"x" * MAX_HEAD + OK, after_answer=True)
    assert end.body == b'{"ok":true}'


def test_junk_in_small_pieces_is_counted_in_all() -> None:
    reader = Reader(after_answer=True)
    pieces = [b"x" * 1000] * (MAX_HEAD // 1000 + 2)
    with pytest.raises(ProtocolError):
        _events(reader, *pieces)


def test_a_status_line_split_in_its_first_bytes_is_not_junk() -> None:
    _, end, _ = _read(b"HTT", OK[3:], after_answer=True)
    assert end.body == b'{"ok":true}'


def test_after_junk_the_first_status_line_is_the_answer() -> None:
    inner = b"HTTP/1.1 500 Oops\r\n\r\n"
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(inner), inner)
    response, end, _ = _read(b"junk" + answer, after_answer=True)
    assert (response.status, end.body) == (200, inner)


def test_a_body_in_pieces_stops_at_its_length() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    _, end, reader = _read(head + b"a" * 5, b"b" * 5 + b"extra")
    assert end == End(b"aaaaabbbbb", True)
    assert reader.unread == 5


def test_a_body_to_the_close_is_cut_at_the_cap_however_it_arrives() -> None:
    _, end, _ = _read(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (MAX_BODY + 10))
    assert end == End(b"x" * MAX_BODY, False)
    _, end, _ = _read(b"HTTP/1.1 200 OK\r\n\r\nab", b"x" * MAX_BODY)
    assert end == End(b"ab" + b"x" * (MAX_BODY - 2), False)


def test_a_chunked_body_of_exactly_the_cap_is_whole() -> None:
    answer = CHUNKED + b"%x\r\n%s\r\n0\r\n\r\n" % (MAX_BODY, b"z" * MAX_BODY)
    _, end, _ = _read(answer)
    assert end == End(b"z" * MAX_BODY, True)


def test_chunk_sizes_in_either_case_with_many_extensions() -> None:
    answer = CHUNKED + b"A;a=1;b=2\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n"
    _, end, _ = _read(answer)
    assert end == End(b"0123456789abcdefghij", True)


def test_a_chunk_size_line_and_trailers_of_exactly_the_cap_are_read() -> None:
    _, end, _ = _read(CHUNKED + b"0" * MAX_HEAD, b"\r\n\r\n")
    assert end == End(b"", True)
    trailer = b"X: " + b"t" * (MAX_HEAD - 3)
    _, end, _ = _read(CHUNKED + b"0\r\n" + trailer, b"\r\n\r\n")
    assert end == End(b"", True)


def test_a_chunked_body_cut_short_hands_over_its_whole_chunks() -> None:
    reader = Reader()
    reader.feed(CHUNKED + b"5\r\nhello\r\n")
    assert isinstance(reader.next_event(), Response)
    assert reader.next_event() is NEED_DATA
    reader.feed(b"")
    with pytest.raises(ProtocolError):
        reader.next_event()
    assert reader.body() == b"hello"


def test_a_header_value_keeps_its_colons() -> None:
    date = b"Wed, 21 Oct 2015 07:28:00 GMT"
    response, _, _ = _read(b"HTTP/1.1 429 Slow\r\nRetry-After: " + date + b"\r\n\r\n", b"")
    assert response.headers == [(b"Retry-After", date)]


def test_headers_after_the_transfer_coding_are_read() -> None:
    answer = CHUNKED[:-2] + b"Connection: close\r\nX-Id: 7\r\n\r\n0\r\n\r\n"
    response, end, _ = _read(answer)
    assert response.close
    assert response.headers == [(b"Connection", b"close"), (b"X-Id", b"7")]
    assert end == End(b"", True)


def test_a_zero_length_then_another_is_a_conflict() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nabcde"
    with pytest.raises(ProtocolError):
        _events(Reader(), answer)


@pytest.mark.parametrize("fold", [b" ", b"\t"])
def test_a_folded_header_line_is_refused_even_with_a_colon(fold: bytes) -> None:
    answer = b"HTTP/1.1 200 OK\r\nA: b\r\n" + fold + b"X: c\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(ProtocolError) as raised:
        _events(Reader(), answer)
    assert str(raised.value) == f"bad header line {fold + b'X: c'!r}"
