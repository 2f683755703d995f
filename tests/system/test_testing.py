"""koala_async.testing.FakeCollector: its checks, its records and its faults, through both plugs."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import koala_async.testing
from koala_async import KoalaClient
from koala_async.testing import FakeCollector, Received, Reply

pytestmark = pytest.mark.anyio
PID = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"
UA = {"User-Agent": "tests/1.0", "Content-Type": "application/json"}


@asynccontextmanager
async def plugged(fake: FakeCollector, how: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """An httpx client reaching ``fake`` in memory or over a real socket, and its base URL."""
    if how == "memory":
        async with httpx.AsyncClient(transport=fake.transport()) as http:
            yield http, "http://collector.test"
    else:
        async with fake.serve() as base_url, httpx.AsyncClient() as http:
            yield http, base_url


@pytest.fixture(params=["memory", "socket"])
def how(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def post(
    http: httpx.AsyncClient, url: str, body: Any, headers: dict[str, str] = UA
) -> httpx.Response:
    return await http.post(url, content=json.dumps(body).encode(), headers=headers)


async def test_records_entries_by_kind_and_person(how: str) -> None:
    fake = FakeCollector()
    async with (
        plugged(fake, how) as (http, base),
        KoalaClient("pk_test", base_url=base, http_client=http) as koala,
    ):
        await koala.identify(profile_id=PID, email="ada@acme.com", traits={"plan": "pro"})
        await koala.track("Signed Up", profile_id=PID)
        await koala.page(email="grace@acme.com", name="Home")
        await koala.account_identify(domain="acme.com", traits={"seats": 3}, group_id="dev")
    assert fake.violations == []
    assert [e.data["event"] for e in fake.events] == ["Signed Up"]
    assert [(e.profile_id, e.email, e.data["traits"]) for e in fake.identifies] == [
        (PID, "ada@acme.com", {"plan": "pro"})
    ]
    assert [(e.email, e.data["name"]) for e in fake.page_views] == [("grace@acme.com", "Home")]
    assert [(e.domain, e.data["traits"]["group_id"]) for e in fake.accounts] == [
        ("acme.com", "dev")
    ]
    assert set(fake.by_person()) == {PID, "grace@acme.com"}
    assert {r.kind for r in fake.requests} == {"profile", "account"}
    assert {r.key for r in fake.requests} == {"pk_test"}


BAD: list[tuple[str, Any, dict[str, str], str]] = [
    ("/web/projects/k/batch", {"events": []}, UA, "neither profile_id nor email"),
    ("/web/projects/k/batch", {"profile_id": "nope"}, UA, "is not a UUID"),
    ("/web/projects/k/batch", {"email": "nope"}, UA, "is not an address"),
    (
        "/web/projects/k/batch",
        {"email": "a@b.co", "events": [{"type": "track", "event": "E"}] * 31},
        UA,
        "does not match the spec",
    ),
    (
        "/web/projects/k/batch",
        {"email": "a@b.co", "events": [{"type": "track"}]},
        UA,
        "does not match",
    ),
    (
        "/web/projects/k/batch",
        {"email": "a@b.co", "events": [{"type": "page"}]},
        UA,
        "does not match",
    ),
    *[
        (
            "/web/projects/k/batch",
            {"email": "a@b.co", "identifies": [{"type": "identify", "sent_at": sent_at}]},
            UA,
            "is not an ISO 8601 UTC time with milliseconds",
        )
        for sent_at in (
            "noon",
            "2022-11-09T23:57:14Z",
            "2022-11-09T23:57:14.776+00:00",
            "2022-11-09 23:57:14.776Z",
            "2024-02-30T00:00:00.000Z",
        )
    ],
    (
        "/web/projects/k/batch",
        {"email": "a@b.co", "page_views": [{"type": "page"}] * 31},
        UA,
        "does not match the spec",
    ),
    (
        "/web/projects/k/batch",
        {"email": "a@b.co", "identifies": [{"type": "track", "event": "E"}]},
        UA,
        "does not match",
    ),
    (
        "/web/projects/k/accounts/batch",
        {"domain": "a.co", "identifies": [{"type": "identify"}] * 31},
        UA,
        "does not match the spec",
    ),
    ("/web/projects/k/accounts/batch", {"identifies": []}, UA, "neither domain nor account_id"),
    (
        "/web/projects/k/accounts/batch",
        {"domain": "a.co", "events": [{"type": "track", "event": "E"}] * 31},
        UA,
        "does not match the spec",
    ),
    (
        "/web/projects/k/batch",
        {"email": "a@b.co"},
        {"Content-Type": "application/json"},
        "no User-Agent",
    ),
    ("/web/projects/k/batch", {"email": "a@b.co"}, {"User-Agent": "x"}, "not application/json"),
    ("/elsewhere", {"email": "a@b.co"}, UA, "Koala takes POST"),
    ("/web/projects/k/batch", [1, 2], UA, "not a JSON object"),
]


@pytest.mark.parametrize(("path", "body", "headers", "problem"), BAD)
async def test_rejects_what_the_spec_forbids(
    how: str, path: str, body: Any, headers: dict[str, str], problem: str
) -> None:
    fake = FakeCollector()
    async with plugged(fake, how) as (http, base):
        if headers.get("User-Agent") is None:
            headers = {**headers, "User-Agent": ""}
        response = await post(http, base + path, body, headers)
    assert response.status_code == 400
    assert problem in response.json()["error"]
    assert any(problem in v for v in fake.violations)
    assert fake.events == fake.identifies == fake.accounts == []


async def test_fail_next_then_recover(how: str) -> None:
    fake = FakeCollector()
    fake.fail_next(2, status=429, retry_after=1.5)
    async with plugged(fake, how) as (http, base):
        url = base + "/web/projects/k/batch"
        body = {"email": "a@b.co", "events": [{"type": "track", "event": "E", "message_id": "m1"}]}
        first = await post(http, url, body)
        second = await post(http, url, body)
        third = await post(http, url, body)
    assert [first.status_code, second.status_code, third.status_code] == [429, 429, 200]
    assert first.headers["retry-after"] == "1.5"
    assert third.json() == {"ok": True}
    assert fake.message_ids() == {"m1": 1}, "faulted requests do not count as received"
    assert [r.status for r in fake.requests] == [429, 429, 200]
    fake.reset()
    assert fake.requests == []
    assert fake.message_ids() == {}


async def test_reset_drops_the_connection(how: str) -> None:
    fake = FakeCollector()
    fake.fail_next(reset=True)
    async with plugged(fake, how) as (http, base):
        with pytest.raises(httpx.TransportError):
            await post(http, base + "/web/projects/k/batch", {"email": "a@b.co"})
        after = await post(http, base + "/web/projects/k/batch", {"email": "a@b.co"})
    assert after.status_code == 200
    assert [r.status for r in fake.requests] == [0, 200]


async def test_delay_answers_late_but_accepts_at_once(how: str) -> None:
    fake = FakeCollector(responder=lambda received: Reply(delay=0.2))
    async with plugged(fake, how) as (http, base):
        url = base + "/web/projects/k/batch"
        body = {"email": "a@b.co", "events": [{"type": "track", "event": "E", "message_id": "m"}]}
        with anyio.move_on_after(0.05) as waited:
            await post(http, url, body)
    assert waited.cancelled_caught, "the answer came late"
    assert fake.message_ids() == {"m": 1}, "but the entries were taken at once"


async def test_the_server_outlives_clients_that_vanish() -> None:
    fake = FakeCollector()
    async with fake.serve() as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        async with await anyio.connect_tcp(host, int(port)) as stream:
            await stream.send(
                b"POST /web/projects/k/batch HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"
            )
        async with httpx.AsyncClient() as http:
            response = await post(http, base_url + "/web/projects/k/batch", {"email": "a@b.co"})
    assert response.status_code == 200


async def test_reply_headers_and_entry_accessors(how: str) -> None:
    def answer(received: Received) -> Reply | None:
        return Reply(headers={"X-Seen": received.key}) if received.kind == "profile" else None

    fake = FakeCollector(responder=answer)
    async with plugged(fake, how) as (http, base):
        body = {
            "profile_id": PID,
            "events": [{"type": "track", "event": "E", "properties": {"n": 1}}],
            "page_views": [{"type": "page", "name": "Home"}],
            "identifies": [{"type": "identify", "traits": {"plan": "pro"}}],
        }
        response = await post(http, base + "/web/projects/pk_x/batch", body)
    assert response.headers["x-seen"] == "pk_x"
    assert response.headers["content-type"] == "application/json"
    assert [(e.event, e.properties) for e in fake.events] == [("E", {"n": 1})]
    assert [(e.name, e.properties) for e in fake.page_views] == [("Home", {})]
    assert [e.traits for e in fake.identifies] == [{"plan": "pro"}]
    assert fake.by_person() == {PID: fake.events + fake.identifies + fake.page_views}


async def raw_exchange(base_url: str, request: bytes) -> bytes:
    """Send ``request`` as it is over one connection; return all the server wrote back."""
    host, port = base_url.removeprefix("http://").split(":")
    answer = b""
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(request)
        with anyio.fail_after(5):
            try:
                while True:
                    answer += await stream.receive()
            except anyio.EndOfStream:
                pass
    return answer


async def test_the_server_reads_chunked_bodies_expect_continue_and_closes_on_request() -> None:
    fake = FakeCollector()
    body = b'{"email": "a@b.co", "events": [{"type": "track", "event": "Chunked"}]}'
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]))
    async with fake.serve() as base_url:
        answer = await raw_exchange(
            base_url,
            b"POST /web/projects/k/batch HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\n\r\n" + chunked + b"0\r\nX-Checksum: 1\r\n\r\n"
            # a second request on the same connection, asking to close after it
            b"POST /web/projects/k/batch HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n"
            b"Content-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
        )
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert answer.endswith(b'Connection: close\r\n\r\n{"ok":true}')
    assert [e.event for e in fake.events] == ["Chunked", "Chunked"]


@pytest.mark.parametrize(
    ("request_bytes", "status", "error"),
    [
        (b"POST / HTTP/1.1\r\nX: " + b"x" * 70_000, b"431", "request head too large"),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2_000,
            b"400",
            "chunk size line too long",
        ),
    ],
)
async def test_oversized_http_is_refused_with_a_json_reason(
    request_bytes: bytes, status: bytes, error: str
) -> None:
    async with FakeCollector().serve() as base_url:
        answer = await raw_exchange(base_url, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status + b" ")
    assert json.loads(body) == {"error": error, "code": "bad_http"}


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /web/projects/k/batch HTTP/1.1\r\nContent-Length: -3\r\n\r\n",
        b"POST /web/projects/k/batch HTTP/1.1\r\nno colon here\r\n\r\n",
        b"POST /web/projects/k/batch HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_malformed_http_is_answered_400_and_the_server_carries_on(
    request_bytes: bytes,
) -> None:
    fake = FakeCollector()
    async with fake.serve() as base_url:
        answer = await raw_exchange(base_url, request_bytes)
        async with httpx.AsyncClient() as http:
            after = await post(http, base_url + "/web/projects/k/batch", {"email": "a@b.co"})
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert after.status_code == 200
    assert len(fake.requests) == 1, "unreadable HTTP never reaches the collector's checks"


async def test_accepts_and_records_what_koalas_own_integrations_send(how: str) -> None:
    fake = FakeCollector()
    context = {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0", "source": "segment-cloud"}
    async with plugged(fake, how) as (http, base):
        body = {
            "profile_id": PID,
            "ip": "203.0.113.9",
            "traits": {"plan": "pro"},
            "events": [{"type": "track", "event": "E", "context": context}],
            "identifies": [{"type": "identify", "message_id": "m-1", "context": context}],
        }
        response = await post(http, base + "/web/projects/k/batch", body)
    assert response.status_code == 200, response.text
    assert fake.violations == []
    (received,) = fake.requests
    assert (received.ip, received.traits) == ("203.0.113.9", {"plan": "pro"})
    assert [e.context for e in fake.events + fake.identifies] == [context, context]
    assert [e.message_id for e in fake.identifies] == ["m-1"]


async def test_every_violation_of_a_request_is_reported(how: str) -> None:
    fake = FakeCollector()
    async with plugged(fake, how) as (http, base):
        body = {
            "profile_id": "nope",
            "ip": 7,
            "events": [{"type": "track", "event": "E", "sent_at": "noon"}] * 31,
            "page_views": [{"type": "page", "context": "x"}],
        }
        response = await post(http, base + "/web/projects/k/batch", body)
    assert response.status_code == 400
    problems = fake.requests[0].violations
    for problem in (
        "profile_id 'nope' is not a UUID",
        "ip must be a string",
        "events holds 31 entries; Koala takes at most 30",
        "events[30]: sent_at 'noon' is not an ISO 8601 UTC time",
        "page_views[0].context must be an object",
    ):
        assert any(problem in p for p in problems), (problem, problems)


def test_its_rules_are_its_own_not_the_clients() -> None:
    # A checker that imported the client's constants would agree with any mistake in them.
    package = Path(koala_async.testing.__file__).parent
    for module in package.glob("*.py"):
        imports = re.findall(r"^(?:from|import) (\S+)", module.read_text(), re.M)
        client_modules = [name for name in imports if name.startswith(("..", "koala_async"))]
        assert client_modules == [], (module.name, client_modules)
