"""A small HTTP/1.1 server on anyio, enough for the fake collector: keep-alive, Content-Length
or chunked bodies, ``Expect: 100-continue`` (curl sends it), slow answers and TCP resets. It
runs in the caller's event loop, asyncio or trio; a client that misbehaves or vanishes only
ends its own connection."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from http import HTTPStatus

import anyio
import msgspec
from anyio.abc import SocketAttribute, SocketStream

from ._reply import Reply

__all__ = ["serve_http"]

Handler = Callable[[str, str, dict[str, str], bytes], Reply]
_MAX_HEAD = 64 * 1024
_MAX_BODY = 32 * 1024 * 1024  # protects the process; Koala documents no limit


class _BadRequest(Exception):
    """A request that cannot be read: answered with ``status``, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.reply = Reply(status, body=msgspec.json.encode({"error": message, "code": "bad_http"}))


@asynccontextmanager
async def serve_http(handle: Handler, host: str, port: int) -> AsyncIterator[str]:
    """Serve ``handle`` on ``host:port`` (0: any free port) while the block runs; yield the URL."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    bound = listener.extra(SocketAttribute.local_port)
    url_host = f"[{host}]" if ":" in host else host
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, partial(_connection, handle))
        try:
            yield f"http://{url_host}:{bound}"
        finally:
            tasks.cancel_scope.cancel()


async def _connection(handle: Handler, stream: SocketStream) -> None:
    buffer = bytearray()
    async with stream:
        try:
            while True:
                try:
                    method, target, headers, body = await _read_request(stream, buffer)
                except _BadRequest as exc:
                    await stream.send(_response(exc.reply, close=True))
                    return
                reply = handle(method, target.split("?", 1)[0], headers, body)
                if reply.delay:
                    await anyio.sleep(reply.delay)
                if reply.reset:
                    # Linger 0: closing sends a TCP RST, as a crashed proxy would.
                    raw = stream.extra(SocketAttribute.raw_socket)
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                close = "close" in headers.get("connection", "").lower()
                await stream.send(_response(reply, close=close))
                if close:
                    return
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return


async def _read_request(
    stream: SocketStream, buffer: bytearray
) -> tuple[str, str, dict[str, str], bytes]:
    """Read one request from ``stream`` (bytes already received wait in ``buffer``)."""
    end = await _receive_until(
        stream, buffer, b"\r\n\r\n", _MAX_HEAD, 431, "request head too large"
    )
    request_line, *lines = buffer[:end].decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    headers = {"connection": "close"} if version == "HTTP/1.0" else {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest(400, "malformed header line")
        headers[name.strip().lower()] = value.strip()
    if headers.get("expect", "").lower() == "100-continue":
        await stream.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return method, target, headers, await _read_chunked(stream, buffer)
    length = headers.get("content-length", "0")
    if not length.isdigit():
        raise _BadRequest(400, "bad Content-Length")
    if int(length) > _MAX_BODY:
        raise _BadRequest(413, "body too large for the fake collector")
    return method, target, headers, await _receive_exactly(stream, buffer, int(length))


async def _read_chunked(stream: SocketStream, buffer: bytearray) -> bytes:
    body = bytearray()
    while True:
        end = await _receive_until(stream, buffer, b"\r\n", 1024, 400, "chunk size line too long")
        size_text = bytes(buffer[:end]).split(b";", 1)[0].strip()
        del buffer[: end + 2]
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _BadRequest(400, "bad chunk size") from None
        if size == 0:
            break
        if len(body) + size > _MAX_BODY:
            raise _BadRequest(413, "body too large for the fake collector")
        body += (await _receive_exactly(stream, buffer, size + 2))[:size]
    # Trailers, then a blank line.
    while end := await _receive_until(stream, buffer, b"\r\n", _MAX_HEAD, 431, "trailer too large"):
        del buffer[: end + 2]
    del buffer[:2]
    return bytes(body)


async def _receive_until(
    stream: SocketStream, buffer: bytearray, marker: bytes, limit: int, status: int, error: str
) -> int:
    """Receive until ``marker`` is in ``buffer``; return where it starts.

    Past ``limit`` bytes without it, the request is refused with ``status`` and ``error``.
    """
    while (end := buffer.find(marker)) < 0:
        if len(buffer) > limit:
            raise _BadRequest(status, error)
        buffer += await stream.receive()
    return end


async def _receive_exactly(stream: SocketStream, buffer: bytearray, size: int) -> bytes:
    while len(buffer) < size:
        buffer += await stream.receive()
    data = bytes(buffer[:size])
    del buffer[:size]
    return data


def _response(reply: Reply, *, close: bool = False) -> bytes:
    try:
        reason = HTTPStatus(reply.status).phrase
    except ValueError:  # a status of the caller's own
        reason = ""
    head = [f"HTTP/1.1 {reply.status} {reason}", f"Content-Length: {len(reply.body)}"]
    head += [f"{name}: {value}" for name, value in reply.all_headers().items()]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body
