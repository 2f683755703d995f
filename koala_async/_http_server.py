"""A small HTTP/1.1 server on anyio, enough for the fake collector: keep-alive, Content-Length
bodies, slow answers and TCP resets. It runs in the caller's event loop, asyncio or trio."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from http import HTTPStatus

import anyio
from anyio.abc import SocketAttribute, SocketStream

from ._collector import Reply

__all__ = ["serve_http"]

Handler = Callable[[str, str, dict[str, str], bytes], Reply]
_MAX_HEAD = 64 * 1024


@asynccontextmanager
async def serve_http(handle: Handler, host: str, port: int) -> AsyncIterator[str]:
    """Serve ``handle`` on ``host:port`` (0: any free port) while the block runs; yield the URL."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    bound = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, partial(_connection, handle))
        try:
            yield f"http://{host}:{bound}"
        finally:
            tasks.cancel_scope.cancel()


async def _connection(handle: Handler, stream: SocketStream) -> None:
    buffer = bytearray()
    async with stream:
        try:
            while True:
                end = buffer.find(b"\r\n\r\n")
                while end < 0:
                    if len(buffer) > _MAX_HEAD:
                        return
                    buffer += await stream.receive()
                    end = buffer.find(b"\r\n\r\n")
                request_line, *lines = buffer[:end].decode("latin-1").split("\r\n")
                del buffer[: end + 4]
                method, target, _ = request_line.split(" ", 2)
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                while len(buffer) < length:
                    buffer += await stream.receive()
                body = bytes(buffer[:length])
                del buffer[:length]

                reply = handle(method, target.split("?", 1)[0], headers, body)
                if reply.delay:
                    await anyio.sleep(reply.delay)
                if reply.reset:
                    # Linger 0: closing sends a TCP RST, as a crashed proxy would.
                    raw = stream.extra(SocketAttribute.raw_socket)
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                await stream.send(_response(reply))
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError, ValueError):
            return


def _response(reply: Reply) -> bytes:
    reason = (
        HTTPStatus(reply.status).phrase if reply.status in HTTPStatus._value2member_map_ else ""
    )
    head = [
        f"HTTP/1.1 {reply.status} {reason}",
        "Content-Type: application/json",
        f"Content-Length: {len(reply.body)}",
    ]
    if reply.retry_after is not None:
        head.append(f"Retry-After: {reply.retry_after:g}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body
