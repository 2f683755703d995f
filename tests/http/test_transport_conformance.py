"""One HTTP/1.1 conformance suite for Http11Transport and httpx's own transport.

Each case starts a raw TCP server on 127.0.0.1 that answers with exactly the bytes the case
needs (split, interim, malformed, endless, early), and checks what the client makes of them.
Where httpx's transport legitimately differs (it has no body cap, and a 2xx cut short is an
error to it), the case is marked as specific to ours rather than weakened.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import httpx
import pytest
from anyio.abc import ByteStream, SocketAttribute
from conftest import loop_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from koala_async._transport import MAX_BODY, Http11Transport

pytestmark = [pytest.mark.anyio, pytest.mark.every_loop]  # uvloop too

OK = b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"ok":true}'
BIG = 8 * 1024 * 1024  # larger than any socket buffer: the send cannot finish unread


class Conn:
    """One server-side connection, with helpers to read requests and write raw bytes."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += await self.stream.receive()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head

    async def request(self) -> bytes:
        """Read one whole request (Content-Length framed, as both clients send it)."""
        head = await self.head()
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(self.buffer) < length:
            self.buffer += await self.stream.receive()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return body

    async def send(self, data: bytes, *, split: bool = False) -> None:
        if not split:
            await self.stream.send(data)
            return
        for i in range(len(data)):
            await self.stream.send(data[i : i + 1])
            await anyio.lowlevel.checkpoint()  # so the client reads them one at a time


@dataclass
class Server:
    port: int
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    def url(self, path: str = "/web/projects/k/batch") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


Handler = Callable[[Conn, Server], Awaitable[None]]


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Server]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    server = Server(listener.extra(SocketAttribute.local_port))

    async def handle(stream: ByteStream) -> None:
        server.connections += 1
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                await handler(Conn(stream), server)

    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handle)
        yield server
        tasks.cancel_scope.cancel()


def answering(*replies: bytes, split: bool = False, forever: bool = True) -> Handler:
    """A handler that answers each request on a connection with the next reply."""

    async def handler(conn: Conn, server: Server) -> None:
        for reply in replies:
            server.requests.append(await conn.request())
            await conn.send(reply, split=split)
        if forever:  # then waits, like an idle keep-alive server
            await anyio.sleep_forever()

    return handler


@pytest.fixture(params=["koala", "httpx"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_transport(kind: str) -> httpx.AsyncBaseTransport:
    return Http11Transport() if kind == "koala" else httpx.AsyncHTTPTransport()


def client(kind: str, timeout: httpx.Timeout | float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=make_transport(kind), timeout=timeout)


def koala_only(kind: str, why: str) -> None:
    if kind != "koala":
        pytest.skip(f"specific to Http11Transport: {why}")


async def test_split_reads(kind: str) -> None:
    reply = b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: b\r\n\r\n{"ok":true}'
    async with serving(answering(reply, reply, split=True)) as server, client(kind) as http:
        first = await http.post(server.url(), content=b"{}")
        second = await http.post(server.url(), content=b"[]")
    assert [first.json(), second.json()] == [{"ok": True}] * 2
    assert first.headers["x-a"] == "b"
    assert server.requests == [b"{}", b"[]"]
    assert server.connections == 1


async def test_connection_close_opens_a_new_connection(kind: str) -> None:
    reply = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
    async with serving(answering(reply, forever=False)) as server, client(kind) as http:
        statuses = [(await http.post(server.url(), content=b"{}")).status_code for _ in "ab"]
    assert statuses == [200, 200]
    assert server.connections == 2


async def test_interim_responses_are_skipped(kind: str) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
    second = b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\n2"
    async with serving(answering(interim + OK, second)) as server, client(kind) as http:
        first = await http.post(server.url(), content=b"{}")
        again = await http.post(server.url(), content=b"{}")
    assert (first.status_code, first.content) == (200, b'{"ok":true}')
    assert (again.status_code, again.content) == (201, b"2"), "the connection stayed in step"
    assert server.connections == 1


async def test_101_to_a_post_is_an_error(kind: str) -> None:
    koala_only(kind, "httpx hands a 101 over as the response (for upgrades)")
    reply = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n" + OK
    async with serving(answering(reply)) as server, client(kind) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(server.url(), content=b"{}")


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"ICY 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"<html>hello</html>\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    ],
    ids=["letters", "short", "long", "not-http", "html", "length", "lengths", "header"],
)
async def test_malformed_heads_are_protocol_errors(kind: str, reply: bytes) -> None:
    async with serving(answering(reply)) as server, client(kind) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(server.url(), content=b"{}")


async def test_an_oversized_head_is_a_protocol_error(kind: str) -> None:
    # Endless headers: a client without a cap would read them into memory forever.
    async def handler(conn: Conn, server: Server) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\n")
        while True:
            await conn.send(b"X-Filler: " + b"a" * 1000 + b"\r\n")

    async with serving(handler) as server, client(kind) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(server.url(), content=b"{}")


async def test_chunked_with_extensions_and_trailers(kind: str) -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        b'4;x=1\r\n{"ok\r\n7\r\n":true}\r\n0\r\nX-Sum: 1\r\nX-More: 2\r\n\r\n'
    )
    async with serving(answering(reply, OK, split=True)) as server, client(kind) as http:
        first = await http.post(server.url(), content=b"{}")
        second = await http.post(server.url(), content=b"{}")
    assert first.json() == second.json() == {"ok": True}
    assert server.connections == 1


async def test_a_bad_chunk_is_a_protocol_error(kind: str) -> None:
    reply = b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"
    async with serving(answering(reply)) as server, client(kind) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(server.url(), content=b"{}")


async def test_an_error_cut_short_is_a_protocol_error(kind: str) -> None:
    reply = b"HTTP/1.1 500 Oops\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
    async with serving(answering(reply, forever=False)) as server, client(kind) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(server.url(), content=b"{}")


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10,
        b"HTTP/1.1 202 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nxxxxxxxxxx\r\n5\r\nxx",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nxxxxxxxxxx\r\nnot hex\r\n",
    ],
    ids=["length", "chunked", "garbage"],
)
async def test_a_2xx_cut_short_is_still_accepted(kind: str, reply: bytes) -> None:
    koala_only(kind, "to httpx a body cut short is an error; the SDK only needs the status")
    async with serving(answering(reply, forever=False)) as server, client(kind) as http:
        response = await http.post(server.url(), content=b"{}")
        assert 200 <= response.status_code < 300
        assert response.content == b"x" * 10
        assert (await http.post(server.url(), content=b"{}")).status_code < 300
    assert server.connections == 2, "the cut connection is not reused"


async def test_a_2xx_that_stalls_mid_body_is_accepted_at_the_read_timeout(kind: str) -> None:
    koala_only(kind, "to httpx a body cut short is an error; the SDK only needs the status")
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
    timeout = httpx.Timeout(5.0, read=0.2)
    async with serving(answering(reply)) as server, client(kind, timeout) as http:
        response = await http.post(server.url(), content=b"{}")
    assert (response.status_code, response.content) == (200, b"x" * 10)


@pytest.mark.parametrize("status", [b"200 OK", b"400 Bad Request"])
async def test_a_body_past_the_cap_is_cut_and_the_connection_closed(
    kind: str, status: bytes
) -> None:
    koala_only(kind, "httpx has no body cap")

    async def endless(conn: Conn, server: Server) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 " + status + b"\r\n\r\n")  # no length: ends with the close
        while True:
            await conn.send(b"x" * 65536)

    async def huge(conn: Conn, server: Server) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n" % 2**40)
        while True:
            await conn.send(b"x" * 65536)

    for handler in (endless, huge):
        async with serving(handler) as server, client(kind) as http:
            responses = [await http.post(server.url(), content=b"{}") for _ in "ab"]
        assert [r.content for r in responses] == [b"x" * MAX_BODY] * 2
        assert server.connections == 2, "a cut connection is not reused"


async def test_an_early_answer_before_the_body_is_read(kind: str) -> None:
    koala_only(kind, "httpx loses the answer to the failed write (ReadError)")

    async def early(conn: Conn, server: Server) -> None:
        await conn.head()  # not the body: answer, then close with it unread
        await conn.send(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")

    async with serving(early) as server, client(kind) as http:
        response = await http.post(server.url(), content=b"x" * BIG)
    assert response.status_code == 413


@pytest.mark.parametrize("length", [b"", b"Content-Length: 5\r\n"], ids=["bare", "length"])
async def test_204_without_a_body_keeps_the_connection(kind: str, length: bytes) -> None:
    reply = b"HTTP/1.1 204 No Content\r\n" + length + b"\r\n"  # a 204 never has a body
    async with serving(answering(reply, reply, OK)) as server, client(kind) as http:
        responses = [await http.post(server.url(), content=b"{}") for _ in "abc"]
    assert [r.status_code for r in responses] == [204, 204, 200]
    assert responses[2].json() == {"ok": True}
    assert server.connections == 1


async def test_keep_alive_reuse(kind: str) -> None:
    async with serving(answering(*[OK] * 5)) as server, client(kind) as http:
        for _ in range(5):
            assert (await http.post(server.url(), content=b"{}")).json() == {"ok": True}
    assert server.connections == 1
    assert len(server.requests) == 5


async def test_a_server_that_never_answers_hits_the_read_timeout(kind: str) -> None:
    async def silent(conn: Conn, server: Server) -> None:
        await conn.request()
        await anyio.sleep_forever()

    async with serving(silent) as server, client(kind, httpx.Timeout(5.0, read=0.2)) as http:
        with anyio.fail_after(4), pytest.raises(httpx.ReadTimeout):
            await http.post(server.url(), content=b"{}")


# httpx's transport leaves its request stream's generator to the garbage collector here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_server_that_never_reads_hits_the_write_timeout(
    kind: str, anyio_backend: object
) -> None:
    async def deaf(conn: Conn, server: Server) -> None:
        await anyio.sleep_forever()

    # asyncio buffers whatever the socket does not take, so there the write "succeeds" and
    # the read times out instead; trio waits for the socket, so its write times out.
    expected = httpx.WriteTimeout if loop_name(anyio_backend) == "trio" else httpx.ReadTimeout
    timeout = httpx.Timeout(5.0, write=0.2, read=0.4)
    async with serving(deaf) as server, client(kind, timeout) as http:
        with anyio.fail_after(4), pytest.raises(expected):
            await http.post(server.url(), content=b"x" * BIG)


# Generated answers: whatever the server sends, the client ends in time, within bounds, and
# never reports a 2xx the server did not send.

_part = st.one_of(
    st.sampled_from(
        [
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 103 Early Hints\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.0 204 No Content\r\n",
            b"HTTP/1.1 413 Too Large\r\n",
            b"Content-Length: 5\r\n",
            b"Content-Length: 99999999\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Connection: close\r\n",
            b"\r\n",
            b"5\r\nhello\r\n",
            b"0\r\n\r\n",
            b"fffffff\r\n",
        ]
    ),
    st.binary(max_size=40),
    st.builds(lambda s: b"HTTP/1.1 %d X\r\n" % s, st.integers(0, 999)),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(parts=st.lists(_part, max_size=12), close=st.booleans())
async def test_generated_answers(anyio_backend: object, parts: list[bytes], close: bool) -> None:
    answer = b"".join(parts)

    async def handler(conn: Conn, server: Server) -> None:
        await conn.request()
        await conn.send(answer)
        if not close:
            await anyio.sleep_forever()

    timeout = httpx.Timeout(0.1)
    async with serving(handler) as server, client("koala", timeout) as http:
        with anyio.fail_after(3):  # a hang detector, far above the 0.1 s per step
            try:
                response = await http.post(server.url(), content=b"{}")
            except httpx.TransportError:
                return
    status = response.status_code
    assert len(response.content) <= MAX_BODY
    assert len(response.content) <= len(answer)
    if 200 <= status < 300:
        sent = [b"HTTP/1.%d %d" % (minor, status) for minor in (0, 1)]
        assert any(line in answer for line in sent), f"{status} was never sent"
