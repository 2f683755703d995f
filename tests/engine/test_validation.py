"""Every kind of bad input raises a ValidationError at the call, saying what to fix."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from types import MappingProxyType
from typing import Any

import httpx
import pytest

from koala_async import ClientClosedError, KoalaClient, KoalaError, ValidationError
from koala_async.testing import FakeCollector

pytestmark = pytest.mark.anyio
PID = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"


@pytest.fixture
async def koala() -> AsyncIterator[KoalaClient]:
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    async with (
        httpx.AsyncClient(transport=transport) as http,
        KoalaClient("pk_test", http_client=http, strict=True) as client,
    ):
        yield client
        assert client.stats().accepted == 0, "rejected calls must not be queued"


BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("track", {"event": "E"}, "pass profile_id .* or email"),
    ("identify", {}, "pass profile_id .* or email"),
    ("page", {}, "pass profile_id .* or email"),
    ("track", {"event": "E", "profile_id": "not-a-uuid"}, "profile_id must be a UUID"),
    ("track", {"event": "E", "profile_id": 12345}, "profile_id must be a UUID"),
    ("identify", {"profile_id": PID + "0"}, "profile_id must be a UUID"),
    ("track", {"event": "E", "email": "ada"}, "email must be an address"),
    ("identify", {"email": "ada@acme"}, "email must be an address"),
    ("identify", {"email": "a b@acme.com"}, "email must be an address"),
    ("track", {"event": "", "email": "a@b.co"}, "event must be a non-empty string"),
    ("track", {"event": "   ", "email": "a@b.co"}, "event must be a non-empty string"),
    ("track", {"event": None, "email": "a@b.co"}, "event must be a non-empty string"),
    ("account_track", {"event": ""}, "pass domain"),
    ("account_identify", {}, "pass domain .* or account_id"),
    ("account_track", {"event": "E"}, "pass domain .* or account_id"),
    ("account_identify", {"domain": "not a domain"}, "domain must be a domain name"),
    ("account_identify", {"domain": "localhost"}, "domain must be a domain name"),
    ("account_identify", {"domain": "https://"}, "domain must be a domain name"),
    ("account_identify", {"domain": 42}, "domain must be a string"),
    ("account_identify", {"account_id": ""}, "account_id must be a non-empty string"),
    ("track", {"event": "E", "email": "a@b.co", "properties": [1]}, "properties must be a dict"),
    (
        "track",
        {"event": "E", "email": "a@b.co", "properties": {None: "x"}},
        "properties has the key None: keys must be strings",
    ),
    (
        "page",
        {"email": "a@b.co", "properties": {"name": "ok", "ratio": [1, math.nan]}},
        r"properties\['ratio'\]\[1\] is nan, which JSON cannot carry",
    ),
    (
        "track",
        {"event": "E", "email": "a@b.co", "properties": {"x": object()}},
        "properties hold a value JSON cannot carry",
    ),
    (
        "page",
        {"email": "a@b.co", "properties": {"ratio": math.nan}},
        r"properties\['ratio'\] is nan, which JSON cannot carry",
    ),
    (
        "identify",
        {"email": "a@b.co", "traits": {"deep": {"list": [1.0, math.inf]}}},
        r"traits\['deep'\]\['list'\]\[1\] is inf",
    ),
    ("identify", {"email": "a@b.co", "traits": "plan=pro"}, "traits must be a dict"),
    ("account_identify", {"domain": "a.co", "traits": {"n": {1, object()}}}, "JSON cannot carry"),
    ("track", {"event": "E", "email": "a@b.co", "sent_at": "yesterday"}, "sent_at must be an ISO"),
    (
        "track",
        {"event": "E", "email": "a@b.co", "sent_at": 1700000000},
        "sent_at must be a datetime",
    ),
    (
        "track",
        {"event": "E", "email": "a@b.co", "message_id": ""},
        "message_id must be a non-empty",
    ),
    ("page", {"email": "a@b.co", "name": ""}, "name must be a non-empty string"),
    (
        "account_identify",
        {"domain": "a.co", "group_id": "x", "traits": {"group_id": "y"}},
        "group_id is given twice",
    ),
]


@pytest.mark.parametrize(("method", "kwargs", "message"), BAD_CALLS)
async def test_bad_input_raises_at_the_call(
    koala: KoalaClient, method: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        await getattr(koala, method)(**kwargs)


def test_a_validation_error_is_a_koala_error_and_a_value_error() -> None:
    # Once, not per case: pytest.raises(ValidationError) already checks each case's type.
    assert ValidationError.__mro__[1:3] == (KoalaError, ValueError)


async def test_a_cycle_in_properties_is_a_validation_error(koala: KoalaClient) -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(ValidationError, match="nests too deeply or contains itself"):
        await koala.track("E", email="a@b.co", properties={"loop": loop})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"public_api_key": ""}, "pass public_api_key or set KOALA_PUBLIC_API_KEY"),
        ({"public_api_key": "pk live"}, "is not a key"),
        ({"base_url": "api2.getkoala.com"}, "base_url must be an http"),
        ({"base_url": "https://api2.getkoala.com/web/projects/pk"}, "origin alone .*path"),
        ({"base_url": "http://127.0.0.1:8787?x=1"}, "origin alone"),
        ({"base_url": "http://a.co\r\nX-Injected: 1"}, "control character"),
        ({"base_url": "http://a.co\t"}, "control character"),
        ({"base_url": "http://a.co\x00"}, "control character"),
        ({"base_url": "http://a.co:0"}, "impossible port"),
        ({"base_url": "http://a.co:99999"}, "impossible port"),
        ({"base_url": "http://user:secret@a.co"}, "user name or password.*remove them"),
        ({"user_agent": "a\nb"}, "user_agent must be one line"),
        ({"user_agent": "a\rInjected: yes"}, "user_agent must be one line"),
        ({"user_agent": "a\x00b"}, "user_agent must be one line"),
        ({"on_full": "wait"}, "on_full must be"),
        ({"flush_interval": 0}, "flush_interval must be a number of seconds greater than 0"),
        ({"flush_interval": "1"}, "flush_interval must be a number of seconds"),
        ({"max_queue_size": 0}, "max_queue_size must be a whole number of at least 1"),
        ({"max_queue_size": 1.5}, "max_queue_size must be a whole number"),
        ({"max_concurrent_requests": 0}, "max_concurrent_requests must be a whole number"),
        ({"timeout": -1}, "timeout must be a number of seconds greater than 0"),
        ({"shutdown_timeout": -1}, "shutdown_timeout must be a number of seconds 0 or more"),
        ({"shutdown_timeout": float("inf")}, "shutdown_timeout must be a number of seconds"),
        ({"retry": {"max_attempts": 3}}, "retry must be a RetryPolicy"),
        ({"http_client": object()}, "http_client must be an httpx.AsyncClient"),
    ],
)
def test_bad_configuration_raises_at_construction(
    kwargs: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KOALA_PUBLIC_API_KEY", raising=False)
    kwargs.setdefault("public_api_key", "pk_test")
    with pytest.raises(ValidationError, match=message):
        KoalaClient(**kwargs)


def test_the_key_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOALA_PUBLIC_API_KEY", "pk_from_env_123")
    monkeypatch.setenv("KOALA_BASE_URL", "http://127.0.0.1:9/")
    client = KoalaClient()
    assert "'http://127.0.0.1:9'" in repr(client)
    assert "pk_from_env_123" not in repr(client)


async def test_calls_before_opening_say_how_to_open() -> None:
    client = KoalaClient("pk_test", strict=True)
    with pytest.raises(ClientClosedError, match="async with KoalaClient"):
        await client.track("E", email="a@b.co")


async def test_number_keys_become_strings_and_none_stays_null() -> None:
    fake = FakeCollector()
    async with (
        httpx.AsyncClient(transport=fake.transport()) as http,
        KoalaClient("pk_test", http_client=http) as koala,
    ):
        numbered: dict[Any, Any] = {"coupon": None, 7: [None, 1.5]}
        await koala.track("E", email="a@b.co", properties=numbered)
        await koala.identify(email="a@b.co", traits=MappingProxyType({"plan": "pro"}))
    assert [e.properties for e in fake.events] == [{"coupon": None, "7": [None, 1.5]}]
    assert [e.traits for e in fake.identifies] == [{"plan": "pro"}]
    assert fake.violations == []
