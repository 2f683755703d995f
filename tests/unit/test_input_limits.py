"""The user_agent guard, the bounded validation caches and sent_at on every Python alike."""

from __future__ import annotations

import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest

from koala_async import KoalaClient, ValidationError, _validate

PID = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        ("acme-app/2.3.0", "acme-app/2.3.0"),
        ("  acme (linux) 1.0 ", "acme (linux) 1.0"),
    ],
)
def test_user_agent_returns_one_stripped_line(given: object, expected: str | None) -> None:
    assert _validate.user_agent(given) == expected


@pytest.mark.parametrize(
    "given",
    ["a\rb", "a\nb", "a\r\nX-Injected: 1", "a\x00b", "a\tb", "a\x7fb", "a\x1bb", "acme\n", "café"],
)
def test_user_agent_refuses_what_would_break_the_header(given: str) -> None:
    with pytest.raises(ValidationError, match="printable ASCII with no control characters"):
        _validate.user_agent(given)


@pytest.mark.parametrize("given", ["", "   ", 3, b"acme"])
def test_user_agent_refuses_what_is_not_text(given: object) -> None:
    with pytest.raises(ValidationError, match="user_agent must be a non-empty string"):
        _validate.user_agent(given)


def test_the_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    empties: dict[str, object] = {"_emails": {}, "_profile_ids": {}, "_events": set()}
    for name, empty in empties.items():
        monkeypatch.setattr(_validate, name, empty)  # whatever other tests left
    monkeypatch.setattr(_validate, "_event_chars", 0)
    count = _validate._MAX_IDS + 100
    for i in range(count):  # e-mails and UUIDs by count, names of 250 characters by characters
        _validate.person(f"{i:08x}-0000-4000-8000-000000000000", f"{i:06d}{'a' * 237}@acme.com")
        _validate.event_name(f"{i:06d}{'e' * 244}")
    for cache in (_validate._emails, _validate._profile_ids):
        assert 0 < len(cache) <= 100, "emptied when full, then filled again"
    assert 0 < sum(map(len, _validate._events)) <= _validate._CACHE_CHARS
    assert len(_validate._events) < count, "the name cache was emptied when full"


def test_an_email_longer_than_smtp_allows_is_refused_and_not_kept() -> None:
    long = "a" * 250 + "@acme.com"
    with pytest.raises(ValidationError, match="at most 254 characters"):
        _validate.person(None, long)
    assert long not in _validate._emails
    _validate.person(None, "a" * 245 + "@acme.com")  # 254: the longest allowed


def test_a_long_domain_argument_is_parsed_but_not_remembered() -> None:
    _validate._normalize_domain_cached.cache_clear()
    url = "https://www.acme.com/" + "x" * 100_000
    assert _validate.normalize_domain(url) == "acme.com"
    assert _validate._normalize_domain_cached.cache_info().currsize == 0
    assert _validate.normalize_domain("https://www.acme.com/pricing") == "acme.com"
    assert _validate._normalize_domain_cached.cache_info().currsize == 1


def test_the_caches_stay_consistent_under_threads() -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(2000):
                email = f"t{n}-{i}-{'x' * 200}@acme.com"
                assert _validate.person(PID.upper(), email) == ("profile_id", PID, "email", email)
                assert _validate.event_name(f"E{i}{'e' * 300}") == f"E{i}{'e' * 300}"
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert len(_validate._emails) <= _validate._MAX_IDS + 8  # a thread's add may race a reset
    assert sum(map(len, _validate._events)) <= _validate._CACHE_CHARS


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("2024-05-01T14:00:00.5+02:00", "2024-05-01T12:00:00.500Z"),  # 3.10's fromisoformat: no
        ("2024-05-01T14:00:00.123456789Z", "2024-05-01T14:00:00.123Z"),
        ("2024-05-01T14:00:00+0200", "2024-05-01T12:00:00.000Z"),
        ("2024-05-01T14:00:00+02", "2024-05-01T12:00:00.000Z"),
        ("2024-05-01T14:00:00,25Z", "2024-05-01T14:00:00.250Z"),
        ("2024-05-01T14:00:00z", "2024-05-01T14:00:00.000Z"),
        ("2024-05-01 14:00:00", "2024-05-01T14:00:00.000Z"),
        ("2024-05-01T14:00", "2024-05-01T14:00:00.000Z"),
        ("2024-05-01T14", "2024-05-01T14:00:00.000Z"),
        ("2024-05-01", "2024-05-01T00:00:00.000Z"),
        (" 2024-05-01T14:00:00-01:30 ", "2024-05-01T15:30:00.000Z"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000Z"),
        (datetime(2024, 5, 1, 14), "2024-05-01T14:00:00.000Z"),
        (
            datetime(2024, 5, 1, 14, tzinfo=timezone(timedelta(hours=-5))),
            "2024-05-01T19:00:00.000Z",
        ),
    ],
)
def test_sent_at_reads_the_same_forms_on_every_python(given: object, sent: str) -> None:
    assert _validate.sent_at(given) == sent


@pytest.mark.parametrize(
    "given",
    ["yesterday", "", "2024-05-01T25:00:00Z", "2024-13-01", "20240501T140000", "2024-W18-3"],
)
def test_sent_at_refuses_the_same_forms_on_every_python(given: str) -> None:
    with pytest.raises(ValidationError, match="sent_at must be an ISO 8601 timestamp"):
        _validate.sent_at(given)


def test_sent_at_out_of_range_once_in_utc_is_refused() -> None:
    with pytest.raises(ValidationError, match="out of range once moved to UTC"):
        _validate.sent_at("0001-01-01T00:00:00+01:00")


HUGE = "x" * 10_000_000


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("track", {"event": "E", "profile_id": HUGE}),
        ("track", {"event": "E", "email": HUGE}),
        ("track", {"event": "E", "email": "a@b.co", "message_id": 1, "properties": {HUGE: 1.5j}}),
        ("track", {"event": "E", "email": "a@b.co", "sent_at": HUGE}),
        ("account_track", {"event": "E", "domain": HUGE}),
        ("account_identify", {"account_id": "a", "group_id": "g", "traits": {"group_id": HUGE}}),
        ("identify", {"email": "a@b.co", "traits": {"a": [float("nan")], HUGE: {1: 2, "1": 3}}}),
    ],
)
async def test_no_bad_value_is_echoed_whole(
    method: str, kwargs: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    """A 10 MB bad profile_id once became a 10 MB WARNING line (issue 23)."""
    koala = KoalaClient("pk_test", enabled=False)
    with caplog.at_level("DEBUG", logger="koala_async"):
        assert await getattr(koala, method)(**kwargs) is None
    assert caplog.records, "the drop is logged"
    assert all(len(record.getMessage()) < 1000 for record in caplog.records)
    strict = KoalaClient("pk_test", enabled=False, strict=True)
    with pytest.raises(ValidationError) as raised:
        await getattr(strict, method)(**kwargs)
    assert len(str(raised.value)) < 1000


@pytest.mark.parametrize("value", [HUGE, HUGE.encode(), list(range(10**5)), "short"])
def test_shown_cuts_a_long_repr(value: object) -> None:
    assert len(_validate.shown(value)) < 250
    if value == "short":
        assert _validate.shown(value) == "'short'"
