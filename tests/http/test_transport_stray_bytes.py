"""A connection with bytes left unread after an answer is never reused (issue 23, item 6).

A server that writes a stray CRLF or junk after a 2xx body put the connection out of step:
the next request read the junk as its answer, failed, and was resent though the server had
it (408 duplicates of 600). The server here records entries with the FakeCollector and
answers with its own bytes, junk after each answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import httpx
import pytest
from anyio.abc import ByteStream, SocketAttribute
from wire_check import invariant

from koala_async import KoalaClient, RetryPolicy
from koala_async._transport import Http11Transport
from koala_async.testing import FakeCollector

pytestmark = [pytest.mark.anyio, pytest.mark.every_loop]

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n" + b'{"ok":true}'
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"


async def read_request(stream: ByteStream, buffer: bytearray) -> tuple[str, bytes]:
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        buffer += await stream.receive()
    head = bytes(buffer[:end])
    del buffer[: end + 4]
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(buffer) < length:
        buffer += await stream.receive()
    body = bytes(buffer[:length])
    del buffer[:length]
    return head.split(b" ")[1].decode(), body


@asynccontextmanager
async def junk_server(
    collector: FakeCollector, answer: bytes, junk: bytes
) -> AsyncIterator[tuple[str, list[int]]]:
    """Records each request in ``collector``, answers ``answer`` and writes ``junk`` after
    it: in the same write, and every other time in a write of its own after a turn."""
    connections: list[int] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)

    async def handle(stream: ByteStream) -> None:
        connections.append(1)
        buffer = bytearray()
        async with stream:
            try:
                for n in range(10**9):
                    path, body = await read_request(stream, buffer)
                    headers = {"user-agent": "x", "content-type": "application/json"}
                    collector.handle("POST", path, headers, body)
                    if n % 2:
                        await stream.send(answer + junk)
                    else:
                        await stream.send(answer)
                        await anyio.lowlevel.checkpoint()
                        await stream.send(junk)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return

    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handle)
        yield f"http://127.0.0.1:{port}", connections
        tasks.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("answer", "junk"),
    [(OK, b"\r\n"), (OK, b"junk\r\n"), (CHUNKED, b"\r\n"), (OK, OK)],
    ids=["crlf", "junk", "chunked-crlf", "a-second-answer"],
)
async def test_no_batch_is_sent_twice_after_junk(answer: bytes, junk: bytes) -> None:
    collector = FakeCollector()
    async with junk_server(collector, answer, junk) as (base_url, _):
        koala = KoalaClient("pk_test", base_url=base_url, retry=RetryPolicy(backoff=0))
        async with koala:
            ids = [
                await koala.track("Step", email=f"p{n % 200}@acme.com", properties={"n": n})
                for n in range(600)
            ]
        stats = koala.stats()
    invariant(stats)
    arrived = collector.message_ids()
    assert collector.violations == []
    assert set(arrived) == set(ids), "every entry arrived"
    assert max(arrived.values()) == 1, "none twice"
    assert (stats.delivered, stats.retries) == (600, 0)


async def test_junk_that_arrives_while_idle_is_seen_before_reuse() -> None:
    """A whole false answer written after the real one: reading it as the next request's
    answer would report a status the server never gave to that request."""
    fake = b"HTTP/1.1 500 Stale\r\nContent-Length: 0\r\n\r\n"
    read, sent = anyio.Event(), anyio.Event()
    requests: list[int] = []

    async def handle(stream: ByteStream) -> None:
        buffer = bytearray()
        async with stream:
            await read_request(stream, buffer)
            requests.append(1)
            await stream.send(OK)
            await read.wait()  # the client has read its answer: the connection is idle
            await stream.send(fake)
            sent.set()
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):  # it left
                await read_request(stream, buffer)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    url = f"http://127.0.0.1:{port}/batch"

    async def fresh(stream: ByteStream) -> None:
        if not requests:
            await handle(stream)
            return
        buffer = bytearray()
        async with stream:
            await read_request(stream, buffer)
            requests.append(2)
            await stream.send(OK)

    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, fresh)
        async with httpx.AsyncClient(transport=Http11Transport()) as http:
            assert (await http.post(url, content=b"{}")).status_code == 200
            read.set()
            await sent.wait()
            for _ in range(5):  # let the loop read what arrived
                await anyio.lowlevel.checkpoint()
            assert (await http.post(url, content=b"{}")).status_code == 200
        tasks.cancel_scope.cancel()
    assert requests == [1, 2], "the second request went on a new connection"


async def test_bytes_read_past_an_answer_close_the_connection() -> None:
    """A false answer in the same write as the real one is read with it, and never taken
    for the next request's."""
    fake = b"HTTP/1.1 500 Stale\r\nContent-Length: 0\r\n\r\n"
    connections: list[int] = []

    async def handle(stream: ByteStream) -> None:
        connections.append(1)
        buffer = bytearray()
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    await read_request(stream, buffer)
                    await stream.send(OK + fake)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    url = f"http://127.0.0.1:{listener.extra(SocketAttribute.local_port)}/batch"
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handle)
        async with httpx.AsyncClient(transport=Http11Transport()) as http:
            statuses = [(await http.post(url, content=b"{}")).status_code for _ in "abc"]
        tasks.cancel_scope.cancel()
    assert (statuses, len(connections)) == ([200] * 3, 3)
