"""ip and context on the wire, the request context, ip splitting and send_ip=False."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from wire_check import check_request

import koala_async
from koala_async import (
    KoalaClient,
    ValidationError,
    request_context,
    reset_request_context,
    set_request_context,
)

pytestmark = pytest.mark.anyio
PID = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"
OTHER = "9b0c6f0e-6a51-4d7e-8c1e-2f8e7d7e1a11"
LIBRARY = {"name": "koala-async", "version": koala_async.__version__}
PAGE = {"url": "https://acme.com/pricing", "path": "/pricing", "referrer": "https://g.co/"}


class Recorder:
    """An httpx client whose requests are kept, to be checked against the spec afterwards."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200)

    def bodies(self) -> list[dict[str, Any]]:
        return [check_request(request) for request in self.requests]

    def by_target(self) -> dict[str, dict[str, Any]]:
        """Each body by its first id (people are sent concurrently: in any order)."""
        bodies = {next(iter(body.values())): body for body in self.bodies()}
        assert len(bodies) == len(self.requests), "one request per person here"
        return bodies


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def client(recorder: Recorder, **options: Any) -> KoalaClient:
    return KoalaClient("pk_test", http_client=recorder.http, strict=True, **options)


async def test_a_call_without_ip_or_context_sends_the_same_bytes_as_before(
    recorder: Recorder,
) -> None:
    async with client(recorder) as koala:
        await koala.track("X", profile_id=PID, message_id="m1", sent_at="2024-05-01T12:00:00Z")
    [request] = recorder.requests
    assert request.content == (
        b'{"profile_id":"' + PID.encode() + b'","events":[{"type":"track","event":"X",'
        b'"properties":{},"message_id":"m1","sent_at":"2024-05-01T12:00:00.000Z"}]}'
    )


async def test_explicit_ip_and_context_are_sent_with_the_library(recorder: Recorder) -> None:
    async with client(recorder) as koala:
        await koala.track(
            "X", profile_id=PID, ip="2001:DB8::1", context={"locale": "en-US", "page": PAGE}
        )
        await koala.identify(profile_id=OTHER, ip="198.51.100.1")
    bodies = recorder.by_target()
    first, second = bodies[PID], bodies[OTHER]
    assert first["ip"] == "2001:db8::1"  # the canonical form
    assert first["events"][0]["context"] == {
        "locale": "en-US",
        "page": PAGE,
        "ip": "2001:db8::1",
        "library": LIBRARY,
    }
    # An ip alone goes top-level only.
    assert second["ip"] == "198.51.100.1"
    assert "context" not in second["identifies"][0]


async def test_a_callers_library_is_kept(recorder: Recorder) -> None:
    async with client(recorder) as koala:
        await koala.page(profile_id=PID, context={"library": {"name": "koala-sync"}})
    [body] = recorder.bodies()
    assert body["page_views"][0]["context"] == {"library": {"name": "koala-sync"}}


async def test_calls_in_a_request_context_are_about_its_visitor(recorder: Recorder) -> None:
    async with client(recorder) as koala:
        with request_context(
            profile_id=PID.upper(), ip="203.0.113.9", user_agent="UA/1", page=PAGE
        ):
            await koala.page(name="Pricing")
            await koala.track("Clicked", context={"locale": "fr"})
            await koala.identify(profile_id=PID, email="ada@acme.com")
        await koala.page(profile_id=OTHER)  # after the block: no context
    bodies = recorder.by_target()
    first, second = bodies[PID], bodies[OTHER]
    assert first["ip"] == "203.0.113.9"
    assert first["email"] == "ada@acme.com"
    visitor = {"ip": "203.0.113.9", "userAgent": "UA/1", "page": PAGE, "library": LIBRARY}
    assert first["page_views"][0]["context"] == visitor
    assert first["events"][0]["context"] == {**visitor, "locale": "fr"}
    assert first["identifies"][0]["context"] == visitor
    assert second == {"profile_id": OTHER, "page_views": second["page_views"]}
    assert "context" not in second["page_views"][0]


async def test_a_call_about_someone_else_gets_nothing_from_the_request(
    recorder: Recorder,
) -> None:
    """An admin's request that tracks another person must not lend them the admin's ids."""
    async with client(recorder) as koala:
        with request_context(profile_id=PID, ip="203.0.113.9", user_agent="UA/1"):
            await koala.track("Invited", email="bob@acme.com")
            await koala.track("Seen", profile_id=OTHER)
    bodies = recorder.by_target()
    assert set(bodies) == {"bob@acme.com", OTHER}
    for body in bodies.values():
        assert "ip" not in body
        assert "context" not in body["events"][0]


async def test_the_request_context_follows_child_tasks_and_ends_with_the_request(
    recorder: Recorder,
) -> None:
    async with client(recorder) as koala:
        token = set_request_context(profile_id=PID, ip="203.0.113.9")
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: koala.track("In a child task"))
        reset_request_context(token)
        with pytest.raises(ValidationError, match="pass profile_id"):
            await koala.track("Outside")
    [body] = recorder.bodies()
    assert body["ip"] == "203.0.113.9"


def test_set_request_context_checks_what_it_is_given() -> None:
    with pytest.raises(ValidationError, match="profile_id must be a UUID"):
        set_request_context(profile_id="not-a-uuid")
    # What servers put where an address goes but is not one is left out.
    with request_context(ip="testclient", user_agent="", page={"url": "", "path": "/"}) as ctx:
        assert (ctx.profile_id, ctx.ip) == (None, None)
        assert ctx.context == {"page": {"path": "/"}, "library": LIBRARY}
    with request_context(user_agent="", page={}) as ctx:
        assert ctx.context == {}  # nothing to send: calls send no context


async def test_a_persons_entries_with_different_ips_go_in_different_requests(
    recorder: Recorder,
) -> None:
    async with client(recorder) as koala:
        await koala.track("1", profile_id=PID, ip="192.0.2.1")
        await koala.track("2", profile_id=PID, ip="192.0.2.1")
        await koala.track("3", profile_id=PID, ip="192.0.2.2")
        await koala.track("4", profile_id=PID)  # no ip: joins the open batch
        await koala.track("5", profile_id=PID, ip="192.0.2.1")
    bodies = recorder.bodies()
    assert [(b["ip"], [e["event"] for e in b["events"]]) for b in bodies] == [
        ("192.0.2.1", ["1", "2"]),
        ("192.0.2.2", ["3", "4"]),
        ("192.0.2.1", ["5"]),
    ]
    assert koala.stats().delivered == 5


async def test_account_calls_send_ip_in_context_and_ignore_the_request(
    recorder: Recorder,
) -> None:
    async with client(recorder) as koala:
        with request_context(profile_id=PID, ip="203.0.113.9", user_agent="UA/1"):
            await koala.account_track("Plan Changed", domain="acme.com")
            await koala.account_identify(domain="acme.com", ip="198.51.100.1")
    [body] = recorder.bodies()
    assert "ip" not in body  # Koala's account batch has no ip
    assert "context" not in body["events"][0]
    assert body["identifies"][0]["context"] == {"ip": "198.51.100.1", "library": LIBRARY}


async def test_send_ip_false_sends_no_ip_anywhere(recorder: Recorder) -> None:
    async with client(recorder, send_ip=False) as koala:
        with request_context(profile_id=PID, ip="203.0.113.9", user_agent="UA/1"):
            await koala.page()
            await koala.track("X", ip="198.51.100.1", context={"ip": "198.51.100.2"})
        await koala.account_identify(domain="acme.com", ip="198.51.100.1")
    assert all(b"203.0.113" not in r.content for r in recorder.requests)
    bodies = recorder.by_target()
    person, account = bodies[PID], bodies["acme.com"]
    assert "ip" not in person
    assert person["page_views"][0]["context"] == {"userAgent": "UA/1", "library": LIBRARY}
    assert person["events"][0]["context"] == {"userAgent": "UA/1", "library": LIBRARY}
    assert "context" not in account["identifies"][0]
    assert all(b"198.51.100" not in r.content for r in recorder.requests)


@pytest.mark.parametrize(
    "arguments",
    [
        {"ip": "not an ip"},
        {"ip": 12},
        {"context": {"ip": "nope"}},
        {"context": ["not", "a", "mapping"]},
        {"context": {"x": float("nan")}},
        {"context": {"x": object()}},
    ],
    ids=["ip", "ip-type", "context-ip", "context-type", "context-nan", "context-object"],
)
async def test_bad_ip_or_context_is_refused(recorder: Recorder, arguments: Any) -> None:
    async with client(recorder) as koala:
        with pytest.raises(ValidationError, match=r"ip|context"):
            await koala.track("X", profile_id=PID, **arguments)
    assert recorder.requests == []


async def test_context_is_copied_at_the_call(recorder: Recorder) -> None:
    given: dict[str, Any] = {"page": {"title": "Pricing"}}
    async with client(recorder) as koala:
        await koala.track("X", profile_id=PID, context=given)
        given["page"]["title"] = "changed"
        given["locale"] = "fr"
    [request] = recorder.requests
    assert json.loads(request.content)["events"][0]["context"]["page"] == {"title": "Pricing"}
    assert "locale" not in request.content.decode()
