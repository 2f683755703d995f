"""The lean HTTP/1.1 transport: plain and TLS, keep-alive, chunked and close-delimited bodies."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
import trustme
from anyio.abc import ByteStream, Listener, SocketAttribute
from anyio.streams.tls import TLSListener
from conftest import loop_name
from wire_check import free_port

from koala_async import _aio
from koala_async._retry import Verdict, classify_error
from koala_async._transport import Http11Transport
from koala_async.testing import FakeCollector

pytestmark = [pytest.mark.anyio, pytest.mark.every_loop]  # uvloop too

Answer = Callable[[int], bytes]


@asynccontextmanager
async def raw_server(
    answer: Answer, tls: ssl.SSLContext | None = None, per_connection: int = 100
) -> AsyncIterator[tuple[int, list[int]]]:
    """Answers the n-th request on each connection with ``answer(n)``, closing after
    ``per_connection`` requests; counts connections."""
    connections: list[int] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    served: Listener[Any] = (
        TLSListener(listener, tls, standard_compatible=False) if tls else listener
    )

    async def handle(stream: ByteStream) -> None:
        connections.append(1)
        buffer = b""
        async with stream:
            for n in range(per_connection):
                try:
                    while b"\r\n\r\n" not in buffer:
                        buffer += await stream.receive()
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    while len(buffer) < length:
                        buffer += await stream.receive()
                    buffer = buffer[length:]
                    reply = answer(n)
                    await stream.send(reply)
                    if reply.startswith(b"HTTP/1.0"):
                        return  # an HTTP/1.0 body without a length ends with the connection
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return

    async with served, anyio.create_task_group() as tasks:
        tasks.start_soon(served.serve, handle)
        yield port, connections
        tasks.cancel_scope.cancel()


async def post(transport: Http11Transport, url: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=transport) as http:
        return await http.post(url, content=b'{"email":"a@b.co"}', headers={"User-Agent": "t"})


async def test_chunked_and_close_delimited_bodies() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4\r\n{"ok\r\n6;x=1\r\n":true\r\n1\r\n}\r\n0\r\n\r\n',
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 36\r\n\r\n"
        b'{"error": "Koala ingest suspended"}\n',
        b'HTTP/1.0 200 OK\r\n\r\n{"ok": true}',
    ]
    async with raw_server(lambda n: answers[n]) as (port, connections):
        transport = Http11Transport()
        url = f"http://127.0.0.1:{port}/web/projects/k/batch"
        async with httpx.AsyncClient(transport=transport) as http:
            first = await http.post(url, content=b"{}")
            second = await http.post(url, content=b"{}")
            third = await http.post(url, content=b"{}")
    assert (first.status_code, first.json()) == (200, {"ok": True})
    assert second.status_code == 400
    assert b"suspended" in second.content
    assert third.json() == {"ok": True}
    assert len(connections) == 1, "kept alive across requests until the server closed"


async def test_on_asyncio_the_connection_is_asyncios_own_stream(anyio_backend: object) -> None:
    """Not anyio's socket stream, whose checkpoints and reading toggles cost a third of a
    request's CPU; trio keeps anyio's."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    async with raw_server(lambda n: answer) as (port, _):
        transport = Http11Transport()
        url = f"http://127.0.0.1:{port}/web/projects/k/batch"
        async with httpx.AsyncClient(transport=transport) as http:
            assert (await http.post(url, content=b"{}")).status_code == 200
            native = isinstance(transport._stream, _aio.Stream)
    assert native == (loop_name(anyio_backend) == "asyncio")


async def test_a_kept_alive_connection_the_server_closed_is_replaced() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    async with raw_server(lambda n: answer, per_connection=1) as (port, connections):
        transport = Http11Transport()
        url = f"http://127.0.0.1:{port}/web/projects/k/batch"
        async with httpx.AsyncClient(transport=transport) as http:
            for _ in range(3):
                assert (await http.post(url, content=b"{}")).status_code == 200
                await anyio.sleep(0.05)  # the server closes the idle connection meanwhile
    assert len(connections) == 3


async def test_tls_with_a_trusted_certificate() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    answer = b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"ok":true}'
    async with raw_server(lambda n: answer, tls=server_context) as (port, _):
        transport = Http11Transport(client_context)
        url = f"https://127.0.0.1:{port}/web/projects/k/batch"
        responses = [await post(transport, url)]
        async with httpx.AsyncClient(transport=transport) as http:
            again = [await http.post(url, content=b"{}") for _ in range(3)]
    assert [r.status_code for r in responses + again] == [200] * 4


async def test_tls_refuses_an_untrusted_certificate() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    async with raw_server(lambda n: answer, tls=server_context) as (port, _):
        with pytest.raises(httpx.ConnectError):
            await post(Http11Transport(ssl.create_default_context()), f"https://127.0.0.1:{port}/")


async def test_a_reset_once_connected_is_a_read_error_and_a_refusal_a_connect_error() -> None:
    """Only a connection that never came says the endpoint is unreachable (the circuit opens
    at once on that); a reset after the request went is one failed request. As a
    ConnectError, 30% random resets kept the circuit open and everyone waiting."""
    fake = FakeCollector()
    fake.fail_next(1, reset=True)
    async with fake.serve() as base_url:
        url = f"{base_url}/web/projects/k/batch"
        with pytest.raises(httpx.ReadError) as reset:
            await post(Http11Transport(), url)
        assert (await post(Http11Transport(), url)).status_code == 400  # answered: not a batch
    assert classify_error(reset.value) is Verdict.RETRY
    with pytest.raises(httpx.ConnectError) as refused:
        await post(Http11Transport(), f"http://127.0.0.1:{free_port()}/")
    assert classify_error(refused.value) is Verdict.UNREACHABLE
