"""A byte stream straight on asyncio's transports, for :class:`Http11Transport` on asyncio.

anyio's socket stream adds, to every ``send`` and ``receive``, a turn of the event loop
(its checkpoints) and, to every ``receive``, two ``epoll_ctl`` system calls (it resumes
reading before it waits and pauses it after). Measured on loopback, one keep-alive
connection, a 5 KB batch per request, client CPU per request with the SDK's deadline
around it: 221-240 µs through anyio's stream, 143-148 through this one. It has the three
methods the transport uses and raises what anyio's stream raises (``EndOfStream`` at the
peer's end, ``BrokenResourceError`` when the connection broke), so the transport is the
same on both. Trio keeps anyio's stream. :meth:`Stream.exchange` goes further: it hands
what arrives to a :class:`Receiver` in the protocol's callbacks, so an answer costs the
waiting task one wake-up (e2e with 10 events a person: 11% less CPU per event).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import TYPE_CHECKING, Any, Protocol

import anyio

if TYPE_CHECKING:
    import ssl

__all__ = ["Receiver", "Stream", "connect"]


class Receiver(Protocol):
    """Reads one answer as it arrives, in the protocol's own callbacks (no task woken per
    read): :meth:`Stream.exchange` hands it what arrives until it is done."""

    def received(self, data: bytes) -> None:
        """Bytes arrived."""

    def ended(self, error: Exception | None) -> None:
        """The peer ended the connection (``error`` None), or it broke."""


_READ_SIZE = 64 * 1024
"""Bytes a connection reads at most per turn of the loop (asyncio's own reads take 256 KiB)."""

_buffers = threading.local()  # each thread's read buffer: a loop's reads never overlap


def _read_buffer() -> memoryview:
    try:
        view: memoryview = _buffers.view
    except AttributeError:
        view = _buffers.view = memoryview(bytearray(_READ_SIZE))
    return view


class _Protocol(asyncio.BufferedProtocol):
    """Keeps what arrives, and wakes the one reader or writer waiting for it.

    Buffered: the loop reads into one buffer per thread, and only what arrived is copied out.
    A plain protocol gets a fresh 256 KiB ``bytes`` per read, which glibc maps and unmaps
    each time (three system calls and page faults per answer), as its threshold for
    mapping is never raised by a block that was shrunk before it was freed.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.ended = False  # the peer's end, or the connection lost
        self.error: Exception | None = None  # why it was lost, if it broke
        self.waiter: asyncio.Future[None] | None = None  # a receive waiting for data
        self.paused = False  # the socket's send buffer is full
        self.drained: asyncio.Future[None] | None = None  # a send waiting for room
        self.receiver: Receiver | None = None  # an exchange's reader: it takes what arrives

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        # Copied out at once: the next read, of any connection on this thread, reuses it.
        self.data_received(_read_buffer()[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        # Never paused: the loop reads at most _READ_SIZE a turn, and the transport reads all
        # that comes, up to its caps, then closes.
        receiver = self.receiver
        if receiver is not None:
            receiver.received(data)
            return
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        if self.receiver is not None:
            self.receiver.ended(None)
        self._wake()
        return False  # close our side too: a response never needs it open after

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.error = exc
        if self.receiver is not None:
            self.receiver.ended(exc)
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Stream:
    """``send``, ``receive`` and ``aclose`` as anyio's ``ByteStream`` has them."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol, tls: bool) -> None:
        self._transport = transport
        self._protocol = protocol
        self._tls = tls
        self.loop = asyncio.get_running_loop()  # the connection's: its futures and timers

    async def send(self, data: bytes) -> None:
        protocol = self._protocol
        if protocol.ended or self._transport.is_closing():
            raise anyio.BrokenResourceError from protocol.error
        self._transport.write(data)
        while protocol.paused and not protocol.ended:
            protocol.drained = self.loop.create_future()
            await protocol.drained

    def exchange(self, message: bytes, receiver: Receiver) -> None:
        """Write a whole request and hand what arrives from now on to ``receiver``, until
        :meth:`release`: the answer is read in the protocol's callbacks, with no task woken
        and no future per read. A write never waits: asyncio buffers what the socket does
        not take yet (so this is for messages of a few dozen KB at most)."""
        protocol = self._protocol
        if protocol.ended or self._transport.is_closing():
            raise anyio.BrokenResourceError from protocol.error
        protocol.receiver = receiver
        self._transport.write(message)

    def release(self) -> None:
        """What arrives from now on is kept, as between requests (see :meth:`idle`)."""
        self._protocol.receiver = None

    async def receive(self) -> bytes:
        protocol = self._protocol
        while not protocol.buffer:
            if protocol.ended:
                if protocol.error is not None:
                    raise anyio.BrokenResourceError from protocol.error
                raise anyio.EndOfStream
            protocol.waiter = self.loop.create_future()
            await protocol.waiter
        data = bytes(protocol.buffer)
        protocol.buffer.clear()
        return data

    def idle(self) -> bool:
        """Nothing arrived since the last receive, and the peer has not ended."""
        protocol = self._protocol
        return not protocol.buffer and not protocol.ended

    async def aclose(self) -> None:
        if self._tls:
            # As anyio's stream with tls_standard_compatible=False: no close_notify
            # exchange (asyncio's close() would hold the socket up to 30 s waiting for the
            # server's). The answer is read by now, or the connection is given up.
            self._transport.abort()
        else:
            self._transport.close()


def _is_address(host: str) -> bool:
    """``host`` is an IPv4 or IPv6 address, not a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False


async def connect(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout: float | None = None,
) -> Stream:
    """Open a TCP connection (TLS with ``ssl_context``). Raises ``OSError`` (``ssl``'s errors
    included) when it cannot, as anyio's ``connect_tcp`` does; a TLS handshake that takes
    longer than ``handshake_timeout`` raises ``ConnectionAbortedError`` (a plain-HTTP port
    waits for a request, silently, rather than answer a TLS hello)."""
    loop = asyncio.get_running_loop()
    tls: dict[str, Any] = {}
    if ssl_context is not None:
        tls = {"ssl": ssl_context, "ssl_handshake_timeout": handshake_timeout or 60.0}
    # IPv6 and IPv4 raced (RFC 6555), as anyio's connect_tcp does: on asyncio's own loops, and
    # without a task factory (CPython's race fails with an eager one before gh-124309's fix).
    # uvloop (uvicorn's default where installed) has no race: one address at a time.
    # ssl_context checks ``host``, asyncio's default server_hostname.
    # An address (no name) has nothing to race: the race's tasks would cost each connection
    # about half as much again in CPU.
    if (
        isinstance(loop, asyncio.BaseEventLoop)
        and loop.get_task_factory() is None
        and not _is_address(host)
    ):
        connecting = loop.create_connection(_Protocol, host, port, happy_eyeballs_delay=0.25, **tls)
    else:
        connecting = loop.create_connection(_Protocol, host, port, **tls)
    transport, protocol = await connecting
    return Stream(transport, protocol, ssl_context is not None)
