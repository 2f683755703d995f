"""A sans-IO HTTP/1.1 response reader: fed bytes, it answers with events, and does no I/O.

In the spirit of h11's ``Connection``, but for the one thing a sender needs: the response to
one request. :class:`Reader` is fed what the connection received (``b""`` for the peer's
end) and asked for the next event: :data:`NEED_DATA`, then a :class:`Response` (the final
status and headers; interim ``1xx`` ones are skipped), then an :class:`End` (the body).
Framing, caps and every malformed case are decided here, so each is a test without a socket
(tests/unit/test_h1.py); :class:`~koala_async._transport.Http11Transport` only moves bytes.

The rules (tests/test_transport_conformance.py holds the transport to them over sockets):

- Blank lines before a status line are skipped (a stray CRLF a server wrote after the
  previous answer). On a reused connection (``after_answer``), so is anything before the
  first ``HTTP/1.`` (junk written after the last answer that arrived after this request
  was sent), up to :data:`MAX_HEAD`: read as this answer, it would fail a request the
  server took, and the batch would be sent twice. ``101`` to a POST is an error; more
  than 16 interim responses too.
- The head is capped at :data:`MAX_HEAD` (interim responses included), the body at
  :data:`MAX_BODY`: the SDK never uses the body, so a longer one is cut (``End.complete``
  is False: the connection must be closed).
- ``204``, ``304`` and ``1xx`` have no body whatever the headers say; a transfer coding other
  than chunked, or no length at all, runs to the end of the connection.
- Bytes left over after the answer (:attr:`Reader.unread`) mean the connection is out of
  step with the server: it must not be reused.

Malformed input raises :class:`ProtocolError`. Scans use ``bytearray.find`` and slices,
never a Python loop per byte: this runs on every request.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "NEED_DATA",
    "End",
    "ProtocolError",
    "Reader",
    "Response",
    "TLSAnswer",
]

MAX_HEAD = 64 * 1024  # status line and headers, interim responses included
MAX_BODY = 256 * 1024  # the SDK never reads a body: enough for an error message
MAX_INTERIM = 16  # bounds the work an endless stream of 1xx answers could cause


class ProtocolError(ValueError):
    """The bytes are not an HTTP/1.1 response the reader can follow."""


class TLSAnswer(ProtocolError):
    """A TLS record came where an HTTP answer belongs: the port speaks https."""


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()
"""Feed more bytes (or ``b""`` at the peer's end) before asking again."""


class Response(NamedTuple):
    """The final status line and headers. ``close``: the server will not keep the
    connection (``Connection: close``, HTTP/1.0, or a body that ends with the connection)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    close: bool


class End(NamedTuple):
    """The whole body (up to the cap). ``complete`` is False when it was cut at the cap."""

    body: bytes
    complete: bool


# States
_HEAD, _LENGTH, _TO_CLOSE, _CHUNK_SIZE, _CHUNK, _TRAILERS, _DONE = range(7)


class Reader:
    """Reads one response; make a new one for each request."""

    __slots__ = ("_buffer", "_ended", "_got", "_interim", "_junk", "_parts", "_state", "_wanted")

    def __init__(self, *, after_answer: bool = False) -> None:
        """``after_answer``: the connection carried an answer before; skip junk up to a
        status line (see the module's docstring)."""
        self._buffer = bytearray()
        self._junk = 0 if after_answer else -1  # bytes of junk skipped; -1: none allowed
        self._ended = False
        self._state = _HEAD
        self._interim = 0
        self._parts: list[bytes] = []
        self._got = 0  # body bytes kept in _parts
        self._wanted = 0  # _LENGTH: body bytes to keep in all; _CHUNK: this chunk's size

    def feed(self, data: bytes) -> None:
        """Add received bytes; ``b""`` says the peer ended the connection."""
        if data:
            self._buffer += data
        else:
            self._ended = True

    @property
    def unread(self) -> int:
        """Bytes received past the end of the answer (once :class:`End` was returned)."""
        return len(self._buffer)

    def body(self) -> bytes:
        """What arrived of the body so far: what a 2xx cut short still hands over."""
        return b"".join(self._parts)

    def next_event(self) -> Response | End | _NeedData:
        """The next event, or :data:`NEED_DATA`. Raises :class:`ProtocolError`."""
        state = self._state
        if state == _HEAD:
            return self._head()
        if state == _LENGTH:
            return self._length()
        if state == _TO_CLOSE:
            return self._to_close()
        if state == _DONE:
            raise ProtocolError("the response was read to its end already")
        return self._chunked()

    def _need(self, what: str) -> _NeedData:
        if self._ended:
            raise ProtocolError(f"the connection ended within the {what}")
        return NEED_DATA

    def _head(self) -> Response | _NeedData:
        buffer = self._buffer
        if self._junk >= 0 and buffer and not buffer.startswith(b"HTTP/1."):
            self._skip_junk()
        while True:
            if buffer and buffer[0] in (13, 10):  # blank lines (CR, LF) before a status line
                del buffer[: len(buffer) - len(buffer.lstrip(b"\r\n"))]
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                _check_not_tls(buffer)
                if len(buffer) > MAX_HEAD:
                    raise ProtocolError("response head too large")
                return self._need("response head")
            if end > MAX_HEAD:
                raise ProtocolError("response head too large")
            status_line, *lines = bytes(buffer[:end]).split(b"\r\n")
            del buffer[: end + 4]
            response, length, chunked = _parse_head(status_line, lines)
            status = response.status
            if status >= 200:
                break
            if status == 101:
                raise ProtocolError("101 Switching Protocols to a POST")
            self._interim += 1  # 100 Continue, 103 Early Hints: the final answer follows
            if self._interim > MAX_INTERIM:
                raise ProtocolError("too many interim responses")
        if status in (204, 304):
            length, chunked = 0, False  # never a body, whatever the headers say
        if chunked:
            self._state = _CHUNK_SIZE
        elif length >= 0:
            self._state, self._wanted = _LENGTH, length
        else:
            self._state = _TO_CLOSE
            response = response._replace(close=True)
        return response

    def _skip_junk(self) -> None:
        """Drop what comes before the first status line (all but a tail that may be the start
        of one, until more comes)."""
        buffer = self._buffer
        at = buffer.find(b"HTTP/1.")
        junk = at if at >= 0 else max(0, len(buffer) - 6)
        self._junk += junk
        if self._junk > MAX_HEAD:
            raise ProtocolError("no status line in the answer")
        del buffer[:junk]

    def _length(self) -> End | _NeedData:
        buffer, wanted = self._buffer, self._wanted
        if not self._got and wanted <= len(buffer) and wanted <= MAX_BODY:  # all here: usual
            content = bytes(buffer[:wanted])
            del buffer[:wanted]
            self._state = _DONE
            return End(content, True)
        keep = min(wanted, MAX_BODY)
        if take := min(len(buffer), keep - self._got):
            self._keep(take)
        if self._got == keep:
            self._state = _DONE
            return End(self.body(), keep == wanted)
        return self._need("body")

    def _to_close(self) -> End | _NeedData:
        if take := min(len(self._buffer), MAX_BODY - self._got):
            self._keep(take)
        self._buffer.clear()
        if self._got >= MAX_BODY:
            self._state = _DONE
            return End(self.body(), False)
        if self._ended:
            self._state = _DONE
            return End(self.body(), True)
        return NEED_DATA

    def _chunked(self) -> End | _NeedData:
        buffer = self._buffer
        while True:
            if self._state == _CHUNK_SIZE:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise ProtocolError("chunk size line too long")
                    return self._need("chunked body")
                size_text = bytes(buffer[:end]).split(b";", 1)[0].strip()
                if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                    raise ProtocolError(f"bad chunk size {size_text[:20]!r}")
                size = int(size_text, 16)
                del buffer[: end + 2]
                if size == 0:
                    self._state, self._wanted = _TRAILERS, 0
                elif self._got + size > MAX_BODY:
                    # Past the cap: keep what fits, and leave the rest to the closed connection.
                    self._state, self._wanted = _LENGTH, MAX_BODY + 1
                    return self._length()
                else:
                    self._state, self._wanted = _CHUNK, size
            elif self._state == _CHUNK:
                size = self._wanted
                if len(buffer) < size + 2:
                    return self._need("chunked body")
                if buffer[size : size + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                self._keep(size)
                del buffer[:2]
                self._state = _CHUNK_SIZE
            else:  # trailers, then a blank line
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise ProtocolError("trailers too large")
                    return self._need("trailers")
                self._wanted += end
                if self._wanted > MAX_HEAD:
                    raise ProtocolError("trailers too large")
                del buffer[: end + 2]
                if end == 0:
                    self._state = _DONE
                    return End(self.body(), True)

    def _keep(self, count: int) -> None:
        """Move ``count`` bytes from the buffer to the body."""
        self._parts.append(bytes(self._buffer[:count]))
        del self._buffer[:count]
        self._got += count


def _check_not_tls(start: bytes | bytearray) -> None:
    """Raise :class:`TLSAnswer` if ``start`` is a TLS record (an alert or a handshake)."""
    if start[1:2] == b"\x03" and start[:1] in (b"\x15", b"\x16"):
        raise TLSAnswer("a TLS record where an HTTP answer belongs")


def _parse_head(status_line: bytes, lines: list[bytes]) -> tuple[Response, int, bool]:
    """A status line and header lines: the response, its Content-Length (-1 if none) and
    whether it is chunked. A transfer coding other than chunked runs to the close (-1)."""
    version, _, rest = status_line.partition(b" ")
    status_text = rest[:3]
    if (
        version not in (b"HTTP/1.1", b"HTTP/1.0")
        or len(status_text) != 3
        or not status_text.isdigit()
        or rest[3:4] not in (b"", b" ")
    ):
        _check_not_tls(status_line)  # a valid status line is no TLS record: asked only here
        raise ProtocolError(f"bad status line {status_line[:40]!r}")
    status = int(status_text)
    if status < 100:
        raise ProtocolError(f"bad status {status}")
    headers: list[tuple[bytes, bytes]] = []
    length = -1
    chunked, close = False, version == b"HTTP/1.0"
    framed_by_close = False
    for line in lines:
        name, colon, value = line.partition(b":")
        # A folded line (obs-fold) starts with a space or tab: so does its name, refused here.
        if not colon or not name or name != name.strip():
            raise ProtocolError(f"bad header line {line[:40]!r}")
        value = value.strip()
        lower = name.lower()
        if lower == b"transfer-encoding":  # not passed on: the body is handed over whole
            chunked = value.lower().endswith(b"chunked")
            framed_by_close = not chunked  # another coding: the body ends with the close
            continue
        headers.append((name, value))
        if lower == b"content-length":
            if not value.isdigit() or (length >= 0 and int(value) != length):
                raise ProtocolError(f"bad Content-Length {value[:40]!r}")
            length = int(value)
        elif lower == b"connection":
            close = b"close" in value.lower()
    if chunked or framed_by_close:
        length = -1
    return Response(status, headers, close), length, chunked
