"""A caller's bad data never takes a handler down; strict=True raises it at the call.

For every kind of bad data: by default the call returns None, sends nothing, counts the
entry as dropped ``invalid``, logs the fix once and hands a DeliveryFailure to on_error;
with strict=True it raises ValidationError. A call on a client that is not open is dropped
as ``closed`` (strict: ClientClosedError).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from test_context import PID, Recorder
from wire_check import invariant

from koala_async import ClientClosedError, DeliveryFailure, KoalaClient, ValidationError

pytestmark = pytest.mark.anyio
NAN = float("nan")

BAD_CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "no ids": ("track", {"event": "X"}),
    "profile_id not a UUID": ("track", {"event": "X", "profile_id": "123"}),
    "profile_id not a str": ("identify", {"profile_id": 42}),
    "malformed email": ("identify", {"email": "not an email"}),
    "empty event": ("track", {"event": " ", "profile_id": PID}),
    "event not a str": ("track", {"event": None, "profile_id": PID}),
    "empty page name": ("page", {"name": "", "profile_id": PID}),
    "properties not a dict": ("track", {"event": "X", "profile_id": PID, "properties": [1]}),
    "traits not a dict": ("identify", {"profile_id": PID, "traits": "pro"}),
    "NaN": ("page", {"profile_id": PID, "properties": {"x": [NAN]}}),
    "not JSON": ("track", {"event": "X", "profile_id": PID, "properties": {"x": object()}}),
    "bad key": ("identify", {"profile_id": PID, "traits": {(1, 2): "x"}}),
    "bad sent_at": ("track", {"event": "X", "profile_id": PID, "sent_at": "yesterday"}),
    "sent_at not a date": ("track", {"event": "X", "profile_id": PID, "sent_at": 1}),
    "empty message_id": ("track", {"event": "X", "profile_id": PID, "message_id": ""}),
    "bad ip": ("track", {"event": "X", "profile_id": PID, "ip": "localhost"}),
    "context not a dict": ("page", {"profile_id": PID, "context": "web"}),
    "account without ids": ("account_identify", {}),
    "bad domain": ("account_track", {"event": "X", "domain": "not a domain"}),
    "empty account_id": ("account_identify", {"account_id": " "}),
    "group_id twice": (
        "account_identify",
        {"domain": "acme.com", "group_id": "a", "traits": {"group_id": "b"}},
    ),
}


async def call(koala: KoalaClient, name: str, arguments: dict[str, Any]) -> str | None:
    arguments = dict(arguments)
    if name in ("track", "account_track"):
        result: str | None = await getattr(koala, name)(arguments.pop("event"), **arguments)
    else:
        result = await getattr(koala, name)(**arguments)
    return result


@pytest.mark.parametrize("bad", list(BAD_CALLS))
async def test_strict_raises_bad_data_at_the_call(bad: str) -> None:
    recorder = Recorder()
    async with KoalaClient("pk_test", http_client=recorder.http, strict=True) as koala:
        with pytest.raises(ValidationError):
            await call(koala, *BAD_CALLS[bad])
    assert recorder.requests == []
    assert koala.stats().dropped["invalid"] == 0


@pytest.mark.parametrize("bad", list(BAD_CALLS))
async def test_by_default_bad_data_is_dropped_counted_logged_and_reported(
    bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    failures: list[DeliveryFailure] = []
    async with KoalaClient("pk_test", http_client=recorder.http, on_error=failures.append) as koala:
        with caplog.at_level(logging.WARNING, logger="koala_async"):
            assert await call(koala, *BAD_CALLS[bad]) is None
            assert await call(koala, *BAD_CALLS[bad]) is None  # the same problem again
        await koala.track("Fine", profile_id=PID)
    stats = koala.stats()
    assert stats.dropped["invalid"] == 2
    assert stats.delivered == 1
    invariant(stats)
    assert len(recorder.requests) == 1
    logged = [r.getMessage() for r in caplog.records if "(invalid)" in r.getMessage()]
    assert len(logged) == 1, logged  # once per problem
    assert "strict=True" in logged[0]
    assert [f.reason for f in failures] == ["invalid", "invalid"]
    assert isinstance(failures[0].exception, ValidationError)
    assert str(failures[0].exception) in logged[0]
    assert failures[0].entries == []
    account = BAD_CALLS[bad][0].startswith("account")
    assert failures[0].kind == ("account" if account else "profile")


async def test_distinct_problems_are_each_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with KoalaClient("pk_test", http_client=Recorder().http) as koala:
        with caplog.at_level(logging.WARNING, logger="koala_async"):
            await koala.track("X", email="one bad")
            await koala.track("X", email="another bad")  # the same problem: not logged again
            await koala.track("", email="ada@acme.com")
    logged = [r.getMessage() for r in caplog.records if "(invalid)" in r.getMessage()]
    assert len(logged) == 2, logged
    assert "'one bad'" in logged[0]
    assert "event must be" in logged[1]


async def test_a_call_before_open_or_after_close_is_dropped_as_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    koala = KoalaClient("pk_test", http_client=recorder.http)
    with caplog.at_level(logging.WARNING, logger="koala_async"):
        assert await koala.track("Early", profile_id=PID) is None
        async with koala:
            pass
        assert await koala.identify(profile_id=PID) is None
        assert await koala.account_track("Late", domain="acme.com") is None
    stats = koala.stats()
    assert stats.dropped["closed"] == 3
    invariant(stats)
    assert recorder.requests == []
    logged = [r.getMessage() for r in caplog.records if "(closed)" in r.getMessage()]
    assert len(logged) == 2  # "not open", then "closed": two problems
    assert "async with" in logged[0]


async def test_strict_raises_client_closed_error() -> None:
    koala = KoalaClient("pk_test", http_client=Recorder().http, strict=True)
    with pytest.raises(ClientClosedError, match="not open"):
        await koala.track("Early", profile_id=PID)
    async with koala:
        pass
    with pytest.raises(ClientClosedError, match="closed"):
        await koala.page(profile_id=PID)


async def test_a_call_during_shutdown_is_dropped_as_closed() -> None:
    recorder = Recorder()
    results: list[str | None] = []

    async def during_close(koala: KoalaClient) -> None:
        results.append(await koala.track("During", profile_id=PID))

    async with (
        anyio.create_task_group() as tg,
        KoalaClient("pk_test", http_client=recorder.http) as koala,
    ):
        await koala.track("Before", profile_id=PID)
        tg.start_soon(during_close, koala)  # runs once closing has begun (the next await)
    assert results == [None]
    assert koala.stats().dropped["closed"] == 1
    assert [e["event"] for b in recorder.bodies() for e in b["events"]] == ["Before"]


@pytest.mark.parametrize("option", [{"strict": 1}, {"send_ip": "no"}])
def test_configuration_mistakes_still_raise_at_once(option: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="must be True or False"):
        KoalaClient("pk_test", **option)
