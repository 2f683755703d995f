"""A lean httpx transport: one keep-alive HTTP/1.1 connection, for one sender at a time.

httpx's default transport (httpcore) costs about 400 µs of CPU per request here, most of it in
connection-pool bookkeeping this SDK does not need: each sender sends one request at a time
to one origin. This transport keeps one connection open and writes and parses HTTP/1.1
itself (Content-Length and chunked bodies, ``Connection: close``), for a fraction of that.
Callers who need proxies or HTTP/2 pass an ``httpx.AsyncClient`` of their own instead.
"""

from __future__ import annotations

import contextlib
import ssl

import anyio
import httpx
from anyio.abc import ByteStream

__all__ = ["Http11Transport"]

_MAX_HEAD = 64 * 1024


class Http11Transport(httpx.AsyncBaseTransport):
    """Send requests over one reused HTTP/1.1 connection; not for concurrent use."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context
        self._stream: ByteStream | None = None
        self._origin: tuple[bytes, bytes, int] | None = None
        self._buffer = bytearray()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (
            url.raw_scheme,
            url.raw_host,
            url.port or (443 if url.raw_scheme == b"https" else 80),
        )
        head = [request.method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\nHost: ", url.netloc]
        for name, value in request.headers.raw:
            if name.lower() != b"host":
                head += (b"\r\n", name, b": ", value)
        head.append(b"\r\n\r\n")
        body = request.content
        message = b"".join(head) + body
        reused = self._origin == origin  # None whenever there is no open connection
        try:
            if not reused:
                await self._connect(origin)
            assert self._stream is not None
            try:
                await self._stream.send(message)
                status, headers, content, close = await self._read_response()
            except (
                anyio.EndOfStream,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
                OSError,
            ):
                if not reused:
                    raise
                # A kept-alive connection the server had closed: try once on a fresh one.
                await self._connect(origin)
                assert self._stream is not None
                await self._stream.send(message)
                status, headers, content, close = await self._read_response()
        except anyio.EndOfStream as exc:
            await self.aclose()
            raise httpx.RemoteProtocolError(
                "server disconnected without a response", request=request
            ) from exc
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            await self.aclose()
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        except ValueError as exc:
            await self.aclose()
            raise httpx.RemoteProtocolError(f"malformed response: {exc}", request=request) from exc
        except BaseException:
            await self.aclose()  # cancelled mid-request: the connection is in an unknown state
            raise
        if close:
            await self.aclose()
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def _connect(self, origin: tuple[bytes, bytes, int]) -> None:
        await self.aclose()
        scheme, host, port = origin
        address = host.decode("ascii")
        stream: ByteStream
        if scheme == b"https":
            if self._ssl_context is None:  # made once: loading the CA store is not cheap
                self._ssl_context = ssl.create_default_context()
            # Koala answers and closes; not waiting for its close_notify saves a round trip.
            stream = await anyio.connect_tcp(
                address, port, ssl_context=self._ssl_context, tls_standard_compatible=False
            )
        else:
            stream = await anyio.connect_tcp(address, port)
        self._stream, self._origin = stream, origin
        self._buffer.clear()

    async def _receive(self) -> None:
        assert self._stream is not None
        self._buffer += await self._stream.receive()

    async def _read_response(self) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        buffer = self._buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > _MAX_HEAD:
                raise ValueError("response head too large")
            await self._receive()
        status_line, *lines = bytes(buffer[:end]).split(b"\r\n")
        del buffer[: end + 4]
        version, status_text, *_ = status_line.split(b" ", 2)
        if not version.startswith(b"HTTP/1."):
            raise ValueError(f"not HTTP/1.x: {status_line[:40]!r}")
        status = int(status_text)
        headers: list[tuple[bytes, bytes]] = []
        length = -1
        chunked, close = False, version == b"HTTP/1.0"
        for line in lines:
            name, _, value = line.partition(b":")
            name, value = name.strip(), value.strip()
            lower = name.lower()
            if lower == b"transfer-encoding":  # not passed on: the body is handed over whole
                chunked = b"chunked" in value.lower()
                continue
            headers.append((name, value))
            if lower == b"content-length":
                length = int(value)
            elif lower == b"connection":
                close = value.lower() == b"close"
        if chunked:
            content = await self._read_chunked()
        elif length >= 0 or status in (204, 304) or 100 <= status < 200:
            length = max(length, 0)
            while len(buffer) < length:
                await self._receive()
            content = bytes(buffer[:length])
            del buffer[:length]
        else:  # delimited by the end of the connection
            close = True
            try:
                while True:
                    await self._receive()
            except anyio.EndOfStream:
                pass
            content = bytes(buffer)
            buffer.clear()
        return status, headers, content, close

    async def _read_chunked(self) -> bytes:
        buffer = self._buffer
        chunks: list[bytes] = []
        while True:
            while (end := buffer.find(b"\r\n")) < 0:
                await self._receive()
            size = int(bytes(buffer[:end]).split(b";", 1)[0], 16)
            del buffer[: end + 2]
            if size == 0:
                while (end := buffer.find(b"\r\n")) != 0:  # trailers, then a blank line
                    if end < 0:
                        await self._receive()
                    else:
                        del buffer[: end + 2]
                del buffer[:2]
                return b"".join(chunks)
            while len(buffer) < size + 2:
                await self._receive()
            chunks.append(bytes(buffer[:size]))
            del buffer[: size + 2]

    async def aclose(self) -> None:
        stream, self._stream, self._origin = self._stream, None, None
        if stream is not None:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(OSError, anyio.BrokenResourceError):
                    await stream.aclose()
