"""The sans-IO HTTP/1.1 reader: every framing case, fed bytes, no socket."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def read(*pieces: bytes) -> tuple[Response, End, Reader]:
    """Feed ``pieces`` one by one (``b""`` is the peer's end) until the answer is whole."""
    reader = Reader()
    events: list[Response | End] = []
    feed = iter(pieces)
    while len(events) < 2:
        event = reader.next_event()
        if event is NEED_DATA:
            reader.feed(next(feed))
        else:
            assert isinstance(event, Response | End)
            events.append(event)
    response, end = events
    assert isinstance(response, Response)
    assert isinstance(end, End)
    return response, end, reader


def fails(*pieces: bytes, match: str | None = None) -> None:
    with pytest.raises(ProtocolError, match=match):
        read(*pieces)


def test_a_whole_answer_at_once() -> None:
    response, end, reader = read(OK)
    assert response == Response(200, [(b"Content-Length", b"11")], False)
    assert end == End(b'{"ok":true}', True)
    assert reader.unread == 0


def test_byte_by_byte_is_the_same_answer() -> None:
    assert read(*(OK[i : i + 1] for i in range(len(OK))))[:2] == read(OK)[:2]


def test_nothing_yet_needs_data() -> None:
    reader = Reader()
    assert reader.next_event() is NEED_DATA
    reader.feed(b"HTTP/1.1 200 OK\r\n")
    assert reader.next_event() is NEED_DATA


def test_header_values_are_stripped_and_kept_in_order() -> None:
    response, _, _ = read(
        b"HTTP/1.1 429 Slow\r\nRetry-After:  2 \r\nX-A: b\r\nContent-Length: 0\r\n\r\n"
    )
    assert response.headers == [(b"Retry-After", b"2"), (b"X-A", b"b"), (b"Content-Length", b"0")]


def test_a_status_line_without_a_reason() -> None:
    assert read(b"HTTP/1.1 202\r\nContent-Length: 0\r\n\r\n")[0].status == 202


@pytest.mark.parametrize(
    ("answer", "close"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", False),
    ],
)
def test_connection_close(answer: bytes, close: bool) -> None:
    assert read(answer)[0].close is close


def test_interim_answers_are_skipped() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    response, end, _ = read(interim + OK)
    assert (response.status, end.body) == (200, b'{"ok":true}')


def test_101_is_an_error() -> None:
    fails(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n" + OK, match="101")


def test_endless_interim_answers_are_an_error() -> None:
    fails(b"HTTP/1.1 103 Early Hints\r\n\r\n" * 17 + OK, match="interim")
    assert read(b"HTTP/1.1 103 Early Hints\r\n\r\n" * 16 + OK)[0].status == 200


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"ICY 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"<html>hello</html>\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: no name\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nName : space\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n",
    ],
)
def test_malformed_heads(answer: bytes) -> None:
    fails(answer)


def test_a_repeated_equal_length_is_one_length() -> None:
    assert (
        read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab")[1].body
        == b"ab"
    )


def test_the_head_is_capped_interim_answers_included() -> None:
    fails(b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * MAX_HEAD, match="too large")
    fails(b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", match="too large")


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_whatever_the_headers_say(status: int) -> None:
    answer = b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status
    response, end, _ = read(answer)
    assert (response.status, end, response.close) == (status, End(b"", True), False)


def test_chunked_with_extensions_and_trailers() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;x=1\r\n{"ok\r\n7\r\n":true}\r\n0\r\nX-Sum: 1\r\n\r\n'
    )
    response, end, reader = read(answer)
    assert end == End(b'{"ok":true}', True)
    assert (response.close, reader.unread) == (False, 0)
    assert response.headers == [], "Transfer-Encoding is not passed on: the body is whole"
    assert read(*(answer[i : i + 1] for i in range(len(answer))))[1] == end


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"zz\r\nab\r\n0\r\n\r\n", "chunk size"),
        (b"\r\nab\r\n0\r\n\r\n", "chunk size"),
        (b"2\r\nabXY0\r\n\r\n", "CRLF"),
        (b"f" * (MAX_HEAD + 1), "too long"),
        (b"0\r\nX: " + b"a" * (MAX_HEAD + 1), "trailers"),
        (b"0\r\n" + b"X: a\r\n" * (MAX_HEAD // 4 + 1), "trailers"),
    ],
)
def test_bad_chunks(body: bytes, match: str) -> None:
    fails(b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n" + body, match=match)


def test_another_transfer_coding_runs_to_the_close() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 1\r\n\r\n"
    response, end, _ = read(head, b"abc", b"def", b"")
    assert (response.close, end) == (True, End(b"abcdef", True))


def test_no_length_runs_to_the_close() -> None:
    response, end, _ = read(b"HTTP/1.1 400 Bad\r\n\r\nnope", b"")
    assert (response.close, end) == (True, End(b"nope", True))


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % 2**40,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (MAX_BODY + 10),
    ],
    ids=["close", "length", "chunk"],
)
def test_a_body_past_the_cap_is_cut(head: bytes) -> None:
    reader = Reader()
    reader.feed(head)
    assert isinstance(reader.next_event(), Response)
    while (event := reader.next_event()) is NEED_DATA:
        reader.feed(b"x" * 65536)
    assert event == End(b"x" * MAX_BODY, False)


def test_a_chunked_body_past_the_cap_over_many_chunks() -> None:
    chunk = b"%x\r\n%s\r\n" % (100_000, b"y" * 100_000)
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    _, end, _ = read(head + chunk * 3)
    assert end == End(b"y" * MAX_BODY, False)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"HTTP/1.1 500 Oops\r\nContent-Length: 100\r\n\r\nxx",
        b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
    ],
    ids=["head", "length", "chunk", "trailers"],
)
def test_an_end_within_the_answer_is_an_error(answer: bytes) -> None:
    fails(answer, b"", match="ended within")


def test_what_came_of_a_body_cut_short_is_kept() -> None:
    reader = Reader()
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    assert isinstance(reader.next_event(), Response)
    assert reader.next_event() is NEED_DATA
    assert reader.body() == b"x" * 10


def test_blank_lines_before_the_status_line_are_skipped() -> None:
    """A stray CRLF (or LF) a server wrote after its previous answer."""
    response, end, _ = read(b"\r\n", b"\n\r\n" + OK)
    assert (response.status, end.body) == (200, b'{"ok":true}')


@pytest.mark.parametrize("after", [b"\r\n", b"junk", b"HTTP/1.1 200 OK\r\n"])
def test_bytes_past_the_answer_are_unread(after: bytes) -> None:
    """The transport closes such a connection: its next answer would be out of step."""
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    for answer in (OK, chunked):
        assert read(answer + after)[2].unread == len(after)


def test_a_finished_reader_refuses_more_questions() -> None:
    _, _, reader = read(OK)
    with pytest.raises(ProtocolError):
        reader.next_event()


@given(st.data())
def test_any_split_gives_the_same_events(data: st.DataObject) -> None:
    answers = [
        OK,
        b"HTTP/1.1 103 Hints\r\n\r\n" + OK,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;a\r\nabc\r\n1\r\nd\r\n0\r\nT: 1\r\n\r\n",
        b"HTTP/1.0 503 Busy\r\nRetry-After: 1\r\n\r\nlater",
    ]
    answer = data.draw(st.sampled_from(answers))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(answer)), max_size=8)))
    pieces = [answer[a:b] for a, b in zip([0, *cuts], [*cuts, len(answer)], strict=True) if a < b]
    assert read(*pieces, b"")[:2] == read(answer, b"")[:2]


def read_after_answer(*pieces: bytes) -> tuple[Response, End]:
    reader = Reader(after_answer=True)
    events: list[Response | End] = []
    feed = iter(pieces)
    while len(events) < 2:
        event = reader.next_event()
        if event is NEED_DATA:
            reader.feed(next(feed))
        else:
            assert isinstance(event, Response | End)
            events.append(event)
    response, end = events
    assert isinstance(response, Response)
    assert isinstance(end, End)
    return response, end


@pytest.mark.parametrize("junk", [b"junk\r\n", b"junk", b"\r\nHTTP/2 oops\r\n", b"x" * 60_000])
def test_on_a_reused_connection_junk_before_the_status_line_is_skipped(junk: bytes) -> None:
    """Junk the server wrote after the last answer, arriving after this request went out."""
    assert read_after_answer(junk + OK)[1].body == b'{"ok":true}'
    pieces = [(junk + OK)[i : i + 5] for i in range(0, len(junk + OK), 5)]
    assert read_after_answer(*pieces)[1].body == b'{"ok":true}', "split anywhere"


def test_junk_is_bounded_and_only_skipped_after_an_answer() -> None:
    with pytest.raises(ProtocolError, match="no status line"):
        read_after_answer(b"x" * (MAX_HEAD + 10))
    fails(b"junk\r\n" + OK, match="status line")


@pytest.mark.parametrize(
    "record", [b"\x15\x03\x01\x00\x02\x02\x46", b"\x16\x03\x03\x00\x10\r\n\r\n"]
)
def test_a_tls_record_is_told_apart(record: bytes) -> None:
    """http:// to a port that speaks TLS: the transport names the fix (https://)."""
    with pytest.raises(TLSAnswer):
        read(record, b"")
