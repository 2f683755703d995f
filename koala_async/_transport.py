"""A lean httpx transport: one keep-alive HTTP/1.1 connection, for one sender at a time.

httpx's default transport (httpcore) costs about 2.5x the CPU per request here, most of it
in connection-pool bookkeeping this SDK does not need: each sender sends one request at a
time to one origin. This transport keeps one connection open and writes and parses HTTP/1.1
itself. Callers who need proxies or HTTP/2 pass an ``httpx.AsyncClient`` of their own. On
asyncio the connection is :mod:`._aio`'s stream straight on asyncio's transport (a third less
CPU per request than anyio's socket stream), and the answer to a request of up to 64 KB is
read in the protocol's callbacks as it arrives (:class:`_Answer`: one future per request,
not a future, a task wake-up and a deadline per read); on trio, anyio's stream.

It only does I/O: :mod:`._h1`'s sans-IO reader parses every answer (its rules: 1xx skipped,
``101`` an error, the head and body caps, framing) and says when a connection is out of step.
Around it, this transport decides what the SDK needs of a connection (the conformance suite,
tests/test_transport_conformance.py, runs the same cases against httpx's transport):

- A ``2xx`` status line means the batch was accepted, whatever follows: a body cut short
  by a close, a timeout or garbage still returns the response (and closes the connection).
- A connection is reused only when nothing is left unread on it: bytes past an answer, or
  arriving while it was idle (a stray CRLF, junk after a body), or its end, would be read
  as the next request's answer, and the batch resent though the server had it.
- A large body is sent while the response is read, so an early answer (``413`` and a
  close before the body was read) is seen, and the batch is split rather than retried.
- ``request.extensions["timeout"]`` bounds connecting, each write and each read. There is
  no pool to wait for ("pool" does not apply): one request at a time, never shared. Without
  a read limit (the SDK bounds each whole request instead, and needs only the status and
  headers), a body gets :data:`BODY_GRACE` after its head, and one that stalls or breaks
  leaves the answer as it was (and the connection closed).
- :meth:`Http11Transport.send` takes a request as bytes and answers with status, headers
  and body: the SDK's own senders use it, with a head made once per URL, and skip building
  ``httpx.Request`` and ``httpx.Response`` objects (a third of a request's CPU).

Why not h11 (measured 2026-12-01 with benchmarks/httpx_layers.py against benchmarks/sink.py,
client CPU per request handed straight to the transport, the lowest of 3-5 interleaved
rounds in one process, on a 2-core machine other jobs kept at load 2-10, so the figures are
inflated ~2-3x and only their ratios count): this parser 431-629 µs (before this hardening
325-536 µs: +10-33% across three runs, for +3.4% Python calls under cProfile; re-measure on
a quiet machine), a minimal h11-based one-connection transport 643-898 µs (+30-67%), and
through ``AsyncClient.post`` httpcore (h11 under a pool) 2,600-3,100 µs. h11 would bring
nothing the conformance suite does not already hold this parser to (1xx, framing errors,
caps, trailers) and costs a third or more per request, so the parser stays; the suite runs
the same cases against httpx's transport to keep the two honest.
"""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import sniffio
from anyio.abc import SocketAttribute

from . import _aio, _h1, _loop
from ._h1 import MAX_BODY, MAX_HEAD, NEED_DATA
from ._loop import Loop, Scope

if TYPE_CHECKING:  # ssl costs ~6 ms to import; a context is only made for https
    import asyncio
    import ssl

    from anyio.abc import ByteStream

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "Http11Transport",
    "Misconfigured",
    "Origin",
    "origin",
    "request_head",
]

BODY_GRACE = 1.0  # seconds a body may take after its head, when reads have no limit
_ONE_WRITE = 64 * 1024  # up to this, a request is written at once and then the answer read

Origin = tuple[bytes, bytes, int]
"""Scheme, host and port: what a connection is for."""

Answer = tuple[int, list[tuple[bytes, bytes]], bytes, bool]
"""Status, headers, body, and whether the connection must be closed after it."""


def origin(url: httpx.URL) -> Origin:
    """The origin a request to ``url`` needs a connection to."""
    return url.raw_scheme, url.raw_host, url.port or (443 if url.raw_scheme == b"https" else 80)


def request_head(method: str, url: httpx.URL, headers: list[tuple[bytes, bytes]]) -> bytes:
    """An HTTP/1.1 request's head, up to its blank line: ``Host`` first, then ``headers``
    (a ``Host`` among them is left out; ``Content-Length`` must be among them)."""
    head = [method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\nHost: ", url.netloc]
    for name, value in headers:
        if name.lower() != b"host":
            head += (b"\r\n", name, b": ", value)
    head.append(b"\r\n\r\n")
    return b"".join(head)


class _Timeout(Exception):
    """One phase of a request ran out of time; ``kind`` is the httpx error to raise."""

    def __init__(self, kind: type[httpx.TimeoutException]) -> None:
        self.kind = kind


class Http11Transport(httpx.AsyncBaseTransport):
    """Send requests over one reused HTTP/1.1 connection; not for concurrent use."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context
        self._stream: ByteStream | _aio.Stream | None = None
        self._origin: Origin | None = None
        self._peek: socket.socket | None = None  # see _idle
        self._received = 0  # bytes of the current response seen: 0 means safe to resend
        self._read_timeout: float | None = None
        self._loop: Loop = _loop.ANYIO  # the running loop's, from each connect on

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        head = request_head(request.method, url, request.headers.raw)
        timeouts = request.extensions.get("timeout", {})
        status, headers, content = await self.send(
            origin(url),
            head + request.content,
            timeouts.get("connect"),
            timeouts.get("write"),
            timeouts.get("read"),
            request,
        )
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def send(
        self,
        origin: Origin,
        message: bytes,
        connect_timeout: float | None = None,
        write_timeout: float | None = None,
        read_timeout: float | None = None,
        request: httpx.Request | None = None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send a whole request (head and body) to ``origin``; return the answer's status,
        headers and body. Raises what httpx's transports raise (``request``: to attach to
        the errors). :func:`request_head` makes the head; a caller that sends many requests
        to one URL makes it once, which is the cheapest request this module can send."""
        self._read_timeout = read_timeout
        # None whenever there is no open connection
        reused = self._origin == origin and _idle(self._stream, self._peek)
        try:
            if not reused:
                await self._connect(origin, connect_timeout)
            try:
                status, headers, content, close = await self._exchange(
                    message, write_timeout, reused
                )
            except (
                anyio.EndOfStream,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
                OSError,
            ):
                if not reused or self._received:
                    raise
                # A kept-alive connection the server had closed (nothing of an answer came
                # back, so the request was not processed): try once on a fresh one.
                await self._connect(origin, connect_timeout)
                status, headers, content, close = await self._exchange(
                    message, write_timeout, False
                )
        except _Timeout as exc:
            await self.aclose()
            host = origin[1].decode("ascii")
            hint = ""
            if exc.kind is httpx.ConnectTimeout and origin[0] == b"https":
                hint = f" ({_PLAIN_HTTP_HINT})"
            raise exc.kind(f"{exc.kind.__name__} on {host}{hint}", request=request) from exc
        except anyio.EndOfStream as exc:
            await self.aclose()
            raise httpx.RemoteProtocolError(
                "server disconnected without a complete response", request=request
            ) from exc
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            # A stream is there once connected (a failed connect leaves none). A reset then
            # is no sign that the endpoint is unreachable (which opens the circuit at once):
            # as a ConnectError, 30% random resets kept it open, stalling everyone.
            kind = httpx.ReadError if self._stream is not None else httpx.ConnectError
            await self.aclose()
            if isinstance(exc, ConnectionAbortedError) and "handshake" in str(exc):
                raise httpx.ConnectTimeout(
                    f"no TLS handshake from {_url(origin)} ({exc}); {_PLAIN_HTTP_HINT}",
                    request=request,
                ) from None
            if _plain_http_answered_tls(exc):
                raise Misconfigured(
                    f"{_url(origin)} speaks plain HTTP, not TLS ({exc}): start base_url with "
                    "http://, or give the port that serves https",
                    request=request,
                ) from None
            raise kind(str(exc) or type(exc).__name__, request=request) from exc
        except _h1.TLSAnswer:
            await self.aclose()
            raise Misconfigured(
                f"{_url(origin)} speaks TLS, not plain HTTP: start base_url with https://",
                request=request,
            ) from None
        except ValueError as exc:
            await self.aclose()
            raise httpx.RemoteProtocolError(f"malformed response: {exc}", request=request) from exc
        except BaseException:
            await self.aclose()  # cancelled mid-request: the connection is in an unknown state
            raise
        if close:
            await self.aclose()
        return status, headers, content

    async def _connect(self, origin: Origin, timeout: float | None) -> None:
        await self.aclose()
        scheme, host, port = origin
        address = host.decode("ascii")
        context = None
        if scheme == b"https":
            if self._ssl_context is None:  # made once: loading the CA store is not cheap
                import ssl

                self._ssl_context = ssl.create_default_context()
            context = self._ssl_context
        stream: ByteStream | _aio.Stream
        self._loop = _loop.current()
        with _limit(self._loop, timeout, httpx.ConnectTimeout):
            if sniffio.current_async_library() == "asyncio":  # a third less CPU per request
                # The handshake gets half: its timeout, not the whole request's, says why.
                handshake = None if timeout is None else timeout / 2
                stream = await _aio.connect(address, port, context, handshake)
            elif context is not None:
                # Koala answers and closes; not waiting for its close_notify saves a round trip.
                stream = await anyio.connect_tcp(
                    address, port, ssl_context=context, tls_standard_compatible=False
                )
            else:
                stream = await anyio.connect_tcp(address, port)
        self._stream, self._origin = stream, origin
        self._peek = None if context or isinstance(stream, _aio.Stream) else _raw(stream)

    async def _exchange(self, message: bytes, write_timeout: float | None, reused: bool) -> Answer:
        """Send one request and read its response (``reused``: on a kept-alive connection,
        where junk a server wrote after the last answer may arrive before this one's)."""
        stream = self._stream
        assert stream is not None
        self._received = 0
        if len(message) <= _ONE_WRITE:
            if type(stream) is _aio.Stream:  # asyncio: read in the protocol's callbacks
                receiver = _Answer(stream, reused, self._read_timeout)
                try:
                    stream.exchange(message, receiver)
                    return await receiver.future
                finally:
                    receiver.stop()  # cancelled: the connection is closed next (see send)
                    self._received = receiver.got
            with _limit(self._loop, write_timeout, httpx.WriteTimeout):
                await stream.send(message)
            return await self._read_response(reused)
        # A large body is sent while the answer is read: a server may answer (413) and
        # close before reading it all, and the answer must not be lost to the failed send.
        failure: list[Exception] = []
        sent: list[bool] = []
        reading = anyio.CancelScope()

        async def send() -> None:
            try:
                with _limit(self._loop, write_timeout, httpx.WriteTimeout):
                    await stream.send(message)
            except _Timeout as exc:
                failure.append(exc)
                reading.cancel()  # the server is not reading: do not wait for an answer
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                failure.append(exc)  # the peer is gone: its answer may still be there
            else:
                sent.append(True)

        error: Exception | None = None
        answer: Answer | None = None
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(send)
            with reading:
                try:
                    answer = await self._read_response(reused)
                except Exception as exc:  # raised outside the task group, so never wrapped
                    error = exc
            tasks.cancel_scope.cancel()
        if error is not None:
            if failure and not isinstance(error, ValueError):
                raise failure[0] from error  # no answer came: the failed send says why
            raise error
        if answer is None:  # the send timed out and stopped the read
            raise failure[0]
        status, headers, content, close = answer
        if not sent:
            close = True  # answered before the request was written: the stream is unusable
        return status, headers, content, close

    async def _receive(self, reader: _h1.Reader) -> None:
        """Feed ``reader`` what arrives next (``b""`` at the peer's end, once some of the
        answer came: an end before any of it is the caller's to judge, as EndOfStream)."""
        assert self._stream is not None
        with _limit(self._loop, self._read_timeout, httpx.ReadTimeout):
            try:
                data = await self._stream.receive()
            except anyio.EndOfStream:
                if not self._received:
                    raise
                data = b""
        self._received += len(data)
        reader.feed(data)

    async def _read_response(self, reused: bool) -> Answer:
        """Read one answer through a fresh :class:`_h1.Reader`: status, headers, body and
        whether the connection must be closed after it."""
        reader = _h1.Reader(after_answer=reused)
        await self._receive(reader)  # nothing was there: no need to ask before the first
        while (event := reader.next_event()) is NEED_DATA:
            await self._receive(reader)
        response: _h1.Response = event  # type: ignore[assignment]  # End comes after
        # Without a limit per read, a body still coming gets a limit of its own (see _stands).
        headed = self._read_timeout is None
        try:
            if (end := reader.next_event()) is NEED_DATA:
                with _limit(self._loop, BODY_GRACE if headed else None, httpx.ReadTimeout):
                    while (end := reader.next_event()) is NEED_DATA:
                        await self._receive(reader)
        except (anyio.BrokenResourceError, OSError, ValueError, _Timeout):
            if not _stands(response.status, headed):
                raise
            return response.status, response.headers, reader.body(), True
        return _answer(response, end, reader)  # type: ignore[arg-type]  # an End

    async def aclose(self) -> None:
        stream, self._stream, self._origin = self._stream, None, None
        if isinstance(stream, _aio.Stream):
            await stream.aclose()  # awaits nothing: no cancellation can cut it short
        elif stream is not None:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(OSError, anyio.BrokenResourceError):
                    await stream.aclose()


def _stands(status: int, headed: bool) -> bool:
    """Whether an answer stands when its body then stalls or breaks (it is returned, and its
    connection closed). A 2xx says the batch was accepted: what follows cannot undo that.
    And without a limit per read (``headed``) the caller bounds the whole request and needs
    only the status and headers: a broken body must not turn a known answer (a 429's
    Retry-After) into a timeout at the caller's deadline, and a resend."""
    return headed or 200 <= status < 300


def _answer(response: _h1.Response, end: _h1.End, reader: _h1.Reader) -> Answer:
    """The whole answer. Its connection is closed after it when the server says so, the
    body was cut at the cap, or bytes came past it (a stray CRLF, junk): those put the
    connection out of step, and the next answer read on it would be the wrong one."""
    status, headers, close = response
    body, complete = end
    return status, headers, body, close or not complete or reader.unread > 0


class _Answer:
    """One answer read as it arrives on asyncio's protocol (an :class:`_aio.Receiver`), under
    the same rules as :meth:`Http11Transport._read_response`: no task is woken, no future
    made and no deadline set per read, only one future for the whole answer. ``read_timeout``
    bounds each read (a timer reset as bytes arrive); without one, the caller bounds the whole
    request and a body still coming after the head gets :data:`BODY_GRACE`."""

    __slots__ = ("_read_timeout", "_reader", "_response", "_stream", "_timer", "future", "got")

    def __init__(self, stream: _aio.Stream, reused: bool, read_timeout: float | None) -> None:
        self.future: asyncio.Future[Answer] = stream.loop.create_future()
        self.got = 0  # bytes received: 0 means the request may be sent again
        self._stream = stream
        self._reader = _h1.Reader(after_answer=reused)
        self._response: _h1.Response | None = None
        self._read_timeout = read_timeout
        self._timer: asyncio.TimerHandle | None = None
        if read_timeout is not None:
            self._timer = stream.loop.call_later(read_timeout, self._timed_out)

    def received(self, data: bytes) -> None:
        self.got += len(data)
        self._reader.feed(data)
        if self._read_timeout is not None and self._timer is not None:
            self._timer.cancel()  # each read has its own limit
            self._timer = self._stream.loop.call_later(self._read_timeout, self._timed_out)
        self._advance()

    def ended(self, error: Exception | None) -> None:
        if self.future.done():
            return
        if error is not None:
            broken = anyio.BrokenResourceError()
            broken.__cause__ = error  # what it was (a reset, a TLS alert) is read from here
            self._fail(broken)
        elif not self.got:
            self._fail(anyio.EndOfStream())  # nothing of an answer: the caller judges
        else:
            self._reader.feed(b"")
            self._advance()

    def stop(self) -> None:
        """Stop reading: what arrives from now on waits on the connection, unread."""
        self._stream.release()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _advance(self) -> None:
        reader = self._reader
        try:
            while (event := reader.next_event()) is not NEED_DATA:
                if type(event) is _h1.Response:
                    self._response = event
                    continue
                assert self._response is not None  # End comes after the Response
                self._finish(_answer(self._response, event, reader))  # type: ignore[arg-type]
                return
        except ValueError as exc:  # malformed, or a TLS record
            self._fail(exc)
            return
        if self._response is not None and self._read_timeout is None and self._timer is None:
            self._timer = self._stream.loop.call_later(BODY_GRACE, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(_Timeout(httpx.ReadTimeout))

    def _fail(self, error: Exception) -> None:
        response = self._response
        if response is not None and _stands(response.status, self._read_timeout is None):
            self._finish((response.status, response.headers, self._reader.body(), True))
            return
        self.stop()
        if not self.future.done():
            self.future.set_exception(error)

    def _finish(self, answer: Answer) -> None:
        self.stop()
        if not self.future.done():
            self.future.set_result(answer)


class Misconfigured(httpx.TransportError):
    """The endpoint answers, but not as ``base_url`` says it would: a redirect, or TLS and
    plain HTTP crossed (an ``https://`` URL to a plain-HTTP port, or the reverse). No retry
    can help: the message names the fix, in the configuration."""

    gone = True  # read by _retry.classify_error (pure: it imports no transport)


# A TLS handshake that got no answer in time: a plain-HTTP port waits for a request head.
_PLAIN_HTTP_HINT = "if that port serves plain HTTP, start base_url with http://"
# What OpenSSL says when the server answered a TLS hello in plain HTTP (a "400" to it).
_PLAIN_HTTP_REASONS = frozenset(
    ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")
)


def _plain_http_answered_tls(error: BaseException) -> bool:
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:  # anyio wraps ssl's error
        seen.add(id(cause))
        if getattr(cause, "reason", None) in _PLAIN_HTTP_REASONS:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _url(origin: Origin) -> str:
    scheme, host, port = origin
    return f"{scheme.decode()}://{host.decode('ascii')}:{port}"


def _idle(stream: ByteStream | _aio.Stream | None, peek: socket.socket | None) -> bool:
    """Whether nothing has arrived on a kept-alive connection since its last answer, so that
    the next answer read on it is the next request's. ``peek``: the socket under anyio's
    stream (None over TLS, where TLS records such as session tickets may arrive unasked)."""
    if isinstance(stream, _aio.Stream):
        return stream.idle()
    if peek is None:
        return True
    try:
        peek.recv(1, socket.MSG_PEEK)  # non-blocking: bytes waiting, or b"" for its end
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def _raw(stream: ByteStream) -> socket.socket | None:
    sock = stream.extra(SocketAttribute.raw_socket, None)
    return sock if isinstance(sock, socket.socket) else None


class _limit:
    """A deadline of ``seconds`` raising ``_Timeout(kind)``; nothing at all for None."""

    __slots__ = ("_kind", "_loop", "_scope", "_seconds")

    def __init__(
        self, loop: Loop, seconds: float | None, kind: type[httpx.TimeoutException]
    ) -> None:
        self._loop, self._seconds, self._kind = loop, seconds, kind
        self._scope: Scope | None = None

    def __enter__(self) -> None:
        if self._seconds is not None:
            self._scope = self._loop.move_on_after(self._seconds)
            self._scope.__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        scope = self._scope
        if scope is not None:
            scope.__exit__(*exc_info)  # swallows only its own cancellation, raised as ours
            if scope.cancelled_caught:
                raise _Timeout(self._kind)
