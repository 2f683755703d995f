"""The per-sender client factory and post(): lazy SSL, proxies, and users' clients intact."""

from __future__ import annotations

import base64
import ssl
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
import trustme
from test_transport import raw_server

from koala_async import _http
from koala_async._http import HttpFactory, Route, post
from koala_async._transport import BODY_GRACE, Http11Transport

pytestmark = [pytest.mark.anyio, pytest.mark.every_loop]  # uvloop too

OK = b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"ok":true}'
HEADERS = {"Content-Type": "application/json", "User-Agent": "acme koala-async/1"}


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


def refuse_ssl(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        raise AssertionError("an SSL context was made")

    monkeypatch.setattr(httpx, "create_ssl_context", refuse)
    monkeypatch.setattr(ssl, "create_default_context", refuse)


async def test_http_makes_no_ssl_context(monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_ssl(monkeypatch)
    async with raw_server(lambda n: OK) as (port, connections):
        url = f"http://127.0.0.1:{port}/web/projects/k/batch"
        factory = HttpFactory(f"http://127.0.0.1:{port}", 5.0)
        clients = [factory.new_client() for _ in range(3)]
        for http in clients:
            assert await post(http, Route(url, HEADERS), b"{}", 5.0) == (200, None)
            await http.aclose()
    assert len(connections) == 3


async def test_the_factory_makes_nothing_until_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_ssl(monkeypatch)
    HttpFactory("https://api2.getkoala.com", 10.0)  # no context yet: no client was made
    factory = HttpFactory("https://api2.getkoala.com", 10.0)
    with pytest.raises(AssertionError, match="SSL context"):
        factory.new_client()


async def test_https_shares_one_lazily_made_context(monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    made: list[ssl.SSLContext] = []

    def trusting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        made.append(context)
        return context

    monkeypatch.setattr(httpx, "create_ssl_context", trusting)
    async with raw_server(lambda n: OK, tls=server_context) as (port, connections):
        factory = HttpFactory(f"https://127.0.0.1:{port}", 5.0)
        assert made == []
        clients = [factory.new_client() for _ in range(3)]
        url = f"https://127.0.0.1:{port}/web/projects/k/batch"
        for http in clients:
            assert await post(http, Route(url, HEADERS), b"{}", 5.0) == (200, None)
            assert http._transport._ssl_context is made[0]  # type: ignore[attr-defined]
            await http.aclose()
    assert len(made) == 1
    assert len(connections) == 3


async def test_proxies_in_the_environment_get_httpx_own_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    factory = HttpFactory("http://127.0.0.1:9", 5.0)
    async with factory.new_client() as http:
        assert isinstance(http._transport, Http11Transport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    async with factory.new_client() as http:  # the environment was read at the first client
        assert isinstance(http._transport, Http11Transport)
    factory = HttpFactory("http://127.0.0.1:9", 5.0)
    async with factory.new_client() as http:
        assert not isinstance(http._transport, Http11Transport)
        proxied = http._transport_for_url(httpx.URL("http://127.0.0.1:9/batch"))
        assert proxied is not http._transport, "requests go through the proxy's transport"
        assert http not in _http._own, "post() must take the client layer, which routes"


async def test_post_through_a_users_client_keeps_its_settings() -> None:
    seen: list[httpx.Request] = []
    hooks: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(429, headers={"Set-Cookie": "a=1", "Retry-After": "7"})

    async def on_request(request: httpx.Request) -> None:
        hooks.append(f"request {request.method}")

    async def on_response(response: httpx.Response) -> None:
        hooks.append(f"response {response.status_code}")

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler),
        auth=("user", "secret"),
        headers={"X-Team": "growth"},
        event_hooks={"request": [on_request], "response": [on_response]},
    ) as http:
        route = Route("https://collector.internal/batch", HEADERS)
        assert await post(http, route, b"{}", 5.0) == (429, "7")
        assert http.cookies.get("a") == "1", "the user's client still extracts cookies"
    (request,) = seen
    token = base64.b64encode(b"user:secret").decode()
    assert request.headers["authorization"] == f"Basic {token}"
    assert request.headers["x-team"] == "growth"
    assert request.headers["user-agent"] == HEADERS["User-Agent"]
    assert (str(request.url), request.content) == ("https://collector.internal/batch", b"{}")
    assert hooks == ["request POST", "response 429"]


async def test_post_through_our_client_sends_what_it_was_given() -> None:
    received: list[bytes] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def serve(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            for n in range(3):
                data = b""
                while not data.endswith(b"}"):  # every body here is one JSON object
                    data += await stream.receive()
                received.append(data)
                await stream.send(b"HTTP/1.1 429 Too Many\r\nretry-AFTER: %d\r\n" % n)
                await stream.send(b"Content-Length: 0\r\n\r\n")

    url = f"http://127.0.0.1:{port}/web/projects/k/batch?x=1"
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, serve)
        async with HttpFactory(url, 5.0).new_client() as http:
            route = Route(url, HEADERS)
            answers = [await post(http, route, b'{"n":%d}' % n, 5.0) for n in range(3)]
        tasks.cancel_scope.cancel()
    assert answers == [(429, "0"), (429, "1"), (429, "2")]
    assert received == [
        b"POST /web/projects/k/batch?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Content-Type: application/json\r\nUser-Agent: acme koala-async/1\r\n"
        b'Content-Length: 7\r\n\r\n{"n":%d}' % (port, n)
        for n in range(3)
    ]


@pytest.mark.parametrize(
    ("head", "answer"),
    [
        (b"HTTP/1.1 200 OK\r\n", (200, None)),  # accepted: not a timeout, not a resend
        (b"HTTP/1.1 429 Slow Down\r\nRetry-After: 7\r\n", (429, "7")),  # still a pause
    ],
)
async def test_an_answer_whose_body_stalls_stands_before_the_callers_deadline(
    head: bytes, answer: tuple[int, str | None]
) -> None:
    stalled = head + b"Content-Length: 100\r\n\r\n{"  # and nothing more
    async with raw_server(lambda n: stalled) as (port, _):
        url = f"http://127.0.0.1:{port}/web/projects/k/batch"
        async with HttpFactory(url, 60.0).new_client() as http:
            with anyio.fail_after(BODY_GRACE + 4):  # the sender's deadline, in effect
                assert await post(http, Route(url, HEADERS), b"{}", 5.0) == answer


async def test_a_request_cut_by_its_deadline_leaves_no_connection_behind() -> None:
    answers = iter([b""])  # the first request gets no answer; every later one gets OK
    async with raw_server(lambda n: next(answers, OK)) as (port, connections):
        url = f"http://127.0.0.1:{port}/web/projects/k/batch"
        async with HttpFactory(url, 60.0).new_client() as http:
            with pytest.raises(TimeoutError), anyio.fail_after(0.3):
                await post(http, Route(url, HEADERS), b"{}", 5.0)
            assert await post(http, Route(url, HEADERS), b"{}", 5.0) == (200, None)
    assert len(connections) == 2, "the cut request's connection must not be reused"


async def test_post_through_a_closed_client_fails_as_httpx_does() -> None:
    async with raw_server(lambda n: OK) as (port, _):
        url = f"http://127.0.0.1:{port}/web/projects/k/batch"
        http = HttpFactory(url, 5.0).new_client()
        assert await post(http, Route(url, HEADERS), b"{}", 5.0) == (200, None)
        await http.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await post(http, Route(url, HEADERS), b"{}", 5.0)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("users_client", [False, True], ids=["ours", "users"])
async def test_a_redirect_is_a_misconfiguration_naming_its_location(
    status: int, users_client: bool
) -> None:
    """Never followed (a batch must not go on to another host); the message says where."""
    location = b"https://elsewhere.example/web/projects/pk_secret_key/batch"
    redirect = b"HTTP/1.1 %d Moved\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % (
        status,
        location,
    )
    async with raw_server(lambda n: redirect) as (port, connections):
        url = f"http://127.0.0.1:{port}/web/projects/pk_secret_key/batch"
        factory = HttpFactory(url, 5.0)
        http = httpx.AsyncClient(follow_redirects=True) if users_client else factory.new_client()
        async with http:
            with pytest.raises(_http.Misconfigured) as raised:
                await post(http, Route(url, HEADERS), b"{}", 5.0)
    message = str(raised.value)
    assert f"HTTP {status} redirects to https://elsewhere.example/web/projects/pk_s" in message
    assert "set base_url" in message
    assert "pk_secret_key" not in message
    if not users_client:
        assert len(connections) == 1, "never followed"


async def test_https_to_a_plain_http_port_says_so() -> None:
    """A plain-HTTP server answers the TLS hello with a 400, as nginx or uvicorn do."""

    async def plain(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    url = f"https://127.0.0.1:{port}/web/projects/k/batch"
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, plain)
        async with HttpFactory(url, 5.0).new_client() as http:
            with pytest.raises(_http.Misconfigured, match=r"speaks plain HTTP, not TLS.*http://"):
                await post(http, Route(url, HEADERS), b"{}", 5.0)
        tasks.cancel_scope.cancel()


async def test_https_to_a_silent_plain_http_port_says_so() -> None:
    """A plain-HTTP server that waits for a request head (uvicorn's h11, the collector)
    never answers the TLS hello: the connect times out, saying what to check."""

    async def silent(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            await stream.receive()
            await anyio.sleep(30)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    url = f"https://127.0.0.1:{port}/web/projects/k/batch"
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, silent)
        async with HttpFactory(url, 0.5).new_client() as http:
            with pytest.raises(httpx.ConnectTimeout, match=r"start base_url with http://"):
                await post(http, Route(url, HEADERS), b"{}", 0.5)
        tasks.cancel_scope.cancel()


async def test_http_to_a_tls_port_says_so() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)

    async def tls(stream: anyio.abc.ByteStream) -> None:  # a TLS alert, as TLS servers send
        async with stream:
            await stream.receive()
            await stream.send(b"\x15\x03\x01\x00\x02\x02\x46")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    url = f"http://127.0.0.1:{port}/web/projects/k/batch"
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, tls)
        async with HttpFactory(url, 5.0).new_client() as http:
            with pytest.raises(_http.Misconfigured, match=r"speaks TLS.*https://"):
                await post(http, Route(url, HEADERS), b"{}", 5.0)
        tasks.cancel_scope.cancel()


async def test_a_client_behind_a_redirect_stops_at_once_and_says_where(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The sender reads a redirect as a gone endpoint: no retries, one error naming the
    Location and the fix, and later calls dropped at once."""
    from koala_async import KoalaClient

    redirect = (
        b"HTTP/1.1 308 Moved\r\nLocation: https://elsewhere.example/x\r\nContent-Length: 0\r\n\r\n"
    )
    async with raw_server(lambda n: redirect) as (port, _):
        koala = KoalaClient("pk_test", base_url=f"http://127.0.0.1:{port}", shutdown_timeout=5)
        async with koala:
            await koala.track("Signed Up", email="ada@acme.com")
            await koala.aclose()
        stats = koala.stats()
    assert stats.requests == 1, "never retried"
    assert stats.dropped["gone"] == 1
    assert "redirects to https://elsewhere.example/x" in caplog.text
    assert "set base_url" in caplog.text
