"""before_send: sees every call as a dict, changes or drops it; one that raises changes nothing."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from test_context import PID, Recorder

from koala_async import KoalaClient, ValidationError, request_context

pytestmark = pytest.mark.anyio


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


async def test_it_sees_each_calls_wire_fields_and_ids(recorder: Recorder) -> None:
    seen: list[dict[str, Any]] = []

    def keep(message: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(message))
        return message

    async with KoalaClient("pk_test", http_client=recorder.http, before_send=keep) as koala:
        with request_context(profile_id=PID, ip="203.0.113.9"):
            mid = await koala.track("X", properties={"a": 1}, sent_at="2024-05-01T12:00:00Z")
        await koala.account_identify(domain="www.acme.com", group_id="g")
    track, account = seen
    assert track == {
        "type": "track",
        "event": "X",
        "properties": {"a": 1},
        "message_id": mid,
        "sent_at": "2024-05-01T12:00:00.000Z",
        "context": {"ip": "203.0.113.9", "library": track["context"]["library"]},
        "profile_id": PID,
        "email": None,
        "domain": None,
        "account_id": None,
        "ip": "203.0.113.9",
    }
    assert account["traits"] == {"group_id": "g"}
    assert (account["domain"], account["ip"], account["type"]) == ("acme.com", None, "identify")
    assert len(recorder.bodies()) == 2


async def test_it_scrubs_and_enriches(recorder: Recorder) -> None:
    def scrub(message: dict[str, Any]) -> dict[str, Any]:
        message.get("properties", {}).pop("email", None)  # a fresh copy: change it freely
        message["properties"]["env"] = "prod"
        message["ip"] = None
        return message

    given = {"email": "ada@acme.com", "plan": "pro"}
    async with KoalaClient("pk_test", http_client=recorder.http, before_send=scrub) as koala:
        await koala.track("Paid", profile_id=PID, properties=given, ip="203.0.113.9")
    assert given == {"email": "ada@acme.com", "plan": "pro"}, "the caller's dict is untouched"
    [body] = recorder.bodies()
    assert "ip" not in body
    assert body["events"][0]["properties"] == {"plan": "pro", "env": "prod"}


async def test_returning_none_drops_the_call_as_filtered(recorder: Recorder) -> None:
    def internal_only(message: dict[str, Any]) -> dict[str, Any] | None:
        return None if str(message["email"]).endswith("@internal.test") else message

    async with KoalaClient(
        "pk_test", http_client=recorder.http, before_send=internal_only
    ) as koala:
        assert await koala.track("X", email="qa@internal.test") is None
        assert await koala.identify(email="ada@acme.com") is not None
    stats = koala.stats()
    assert stats.dropped["filtered"] == 1
    assert stats.delivered == 1
    assert stats.accepted == stats.delivered + stats.dropped_total + stats.pending
    assert [b["email"] for b in recorder.bodies()] == ["ada@acme.com"]


async def test_one_that_raises_is_logged_and_the_message_sent_unchanged(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(message: dict[str, Any]) -> dict[str, Any]:
        message["event"] = "changed before the error"
        raise KeyError("oops")

    async with KoalaClient("pk_test", http_client=recorder.http, before_send=broken) as koala:
        with caplog.at_level(logging.WARNING, logger="koala_async"):
            await koala.track("X", profile_id=PID)
            await koala.track("Y", profile_id=PID)
    [body] = recorder.bodies()
    assert [e["event"] for e in body["events"]] == ["X", "Y"]
    warnings = [r.getMessage() for r in caplog.records if "before_send raised" in r.getMessage()]
    assert warnings == ["before_send raised KeyError('oops'); the message was sent unchanged"]


async def test_one_that_returns_something_else_changes_nothing(recorder: Recorder) -> None:
    async with KoalaClient(
        "pk_test",
        http_client=recorder.http,
        before_send=lambda message: "oops",  # type: ignore[arg-type,return-value]
    ) as koala:
        await koala.track("X", profile_id=PID)
    assert recorder.bodies()[0]["events"][0]["event"] == "X"


async def test_what_it_returns_is_checked_like_a_call(recorder: Recorder) -> None:
    def breaks_email(message: dict[str, Any]) -> dict[str, Any]:
        return {**message, "email": "not an email"}

    async with KoalaClient(
        "pk_test", http_client=recorder.http, before_send=breaks_email, strict=True
    ) as koala:
        with pytest.raises(ValidationError, match="email must be an address"):
            await koala.track("X", profile_id=PID)
    async with KoalaClient("pk_test", http_client=recorder.http, before_send=breaks_email) as koala:
        assert await koala.track("X", profile_id=PID) is None
    assert koala.stats().dropped["invalid"] == 1
    assert recorder.requests == []


def test_it_must_be_callable() -> None:
    with pytest.raises(ValidationError, match="before_send must be a function"):
        KoalaClient("pk_test", before_send="scrub")  # type: ignore[arg-type]
