"""KoalaSyncClient keeps KoalaClient's promises: the async client's own tests of strict,
before_send, ip, context and the request context, run unchanged against the sync client.

Each imported test looks up ``KoalaClient`` in its own module; a fixture swaps that name
for :class:`SyncAsAsync`, the sync client behind the async client's interface (its calls
run in the test's thread, its engine on its own as always). Then the sync client's own:
calls on a closed client, and the WSGI, Flask and Django request contexts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import pytest
import test_before_send
import test_context
import test_strict
from test_context import LIBRARY, OTHER, PID, Recorder

from koala_async import (
    ClientClosedError,
    DeliveryFailure,
    KoalaClient,
    KoalaSyncClient,
    Stats,
    ValidationError,
)

pytestmark = pytest.mark.anyio

REUSED = {
    test_strict: (
        "test_strict_raises_bad_data_at_the_call",
        "test_by_default_bad_data_is_dropped_counted_logged_and_reported",
        "test_distinct_problems_are_each_logged",
        "test_configuration_mistakes_still_raise_at_once",
    ),
    test_before_send: (
        "test_it_sees_each_calls_wire_fields_and_ids",
        "test_it_scrubs_and_enriches",
        "test_returning_none_drops_the_call_as_filtered",
        "test_one_that_raises_is_logged_and_the_message_sent_unchanged",
        "test_one_that_returns_something_else_changes_nothing",
        "test_what_it_returns_is_checked_like_a_call",
        "test_it_must_be_callable",
    ),
    test_context: (
        "test_a_call_without_ip_or_context_sends_the_same_bytes_as_before",
        "test_explicit_ip_and_context_are_sent_with_the_library",
        "test_a_callers_library_is_kept",
        "test_calls_in_a_request_context_are_about_its_visitor",
        "test_a_call_about_someone_else_gets_nothing_from_the_request",
        "test_the_request_context_follows_child_tasks_and_ends_with_the_request",
        "test_a_persons_entries_with_different_ips_go_in_different_requests",
        "test_account_calls_send_ip_in_context_and_ignore_the_request",
        "test_send_ip_false_sends_no_ip_anywhere",
        "test_bad_ip_or_context_is_refused",
        "test_context_is_copied_at_the_call",
    ),
}
"""The async client's tests that hold for the sync client as written. Left out: those of a
client not yet opened and of calls during ``aclose`` (the sync client opens itself)."""
recorder = test_context.recorder  # the fixture, for these tests and ours
globals().update(
    {name: getattr(module, name) for module, names in REUSED.items() for name in names}
)


class SyncAsAsync:
    """A KoalaSyncClient with KoalaClient's async interface: ``async with``, awaited calls."""

    def __init__(self, *args: Any, **options: Any) -> None:
        self.sync = KoalaSyncClient(*args, **options)

    async def __aenter__(self) -> SyncAsAsync:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.sync.close()

    def stats(self) -> Stats:
        return self.sync.stats()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        call = getattr(self.sync, name)  # track, identify, page, account_*

        async def awaited(*args: Any, **kwargs: Any) -> Any:
            return call(*args, **kwargs)

        return awaited


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the sync client's calls never touch the test's loop: one is enough


@pytest.fixture(autouse=True)
def sync_client(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in REUSED:
        monkeypatch.setattr(module, "KoalaClient", SyncAsAsync)


def sync(recorder: Recorder, **options: Any) -> KoalaSyncClient:
    return KoalaSyncClient("pk_test", http_client=recorder.http, **options)


# The sync client's own: it has no "not open yet", only closed


def test_a_call_on_a_closed_client_is_dropped_as_closed(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[DeliveryFailure] = []
    koala = sync(recorder, on_error=failures.append)
    assert koala.track("Before", profile_id=PID) is not None
    koala.close()
    with caplog.at_level(logging.WARNING, logger="koala_async"):
        assert koala.identify(profile_id=PID) is None
        assert koala.account_track("Late", domain="acme.com") is None
    stats = koala.stats()
    assert stats.dropped["closed"] == 2
    assert stats.accepted == stats.delivered + stats.dropped_total + stats.pending
    assert [e["event"] for b in recorder.bodies() for e in b["events"]] == ["Before"]
    logged = [r.getMessage() for r in caplog.records if "(closed)" in r.getMessage()]
    assert len(logged) == 1
    assert "create a new one" in logged[0]
    assert failures == []  # on_error ended with the client


@pytest.mark.parametrize("make", [KoalaClient, SyncAsAsync], ids=["async", "sync"])
async def test_a_call_after_close_with_on_error_never_raises(
    recorder: Recorder, make: Callable[..., Any]
) -> None:
    """It did: handing the drop to on_error's closed stream raised ClosedResourceError."""
    koala = make("pk_test", http_client=recorder.http, on_error=print)
    async with koala:
        pass
    assert await koala.track("Late", profile_id=PID) is None
    assert koala.stats().dropped["closed"] == 1


def test_a_client_closed_before_any_call_counts_its_drops(recorder: Recorder) -> None:
    koala = sync(recorder)
    koala.close()
    assert koala.track("Late", profile_id=PID) is None
    assert koala.stats().dropped["closed"] == 1
    strict = sync(recorder, strict=True)
    strict.close()
    with pytest.raises(ClientClosedError, match="create a new one"):
        strict.page(profile_id=PID)


def test_bad_calls_reach_on_error_on_the_delivery_thread(recorder: Recorder) -> None:
    failures: list[DeliveryFailure] = []
    with sync(recorder, on_error=failures.append) as koala:
        assert koala.track("X", email="not an email") is None  # the very first call
    assert [(f.reason, f.ids) for f in failures] == [("invalid", {"email": "not an email"})]


def test_disabled_drops_are_counted_without_a_thread() -> None:
    koala = KoalaSyncClient("pk_test", enabled=False, before_send=lambda message: None)
    assert koala.track("X", profile_id=PID) is None
    assert koala.page(profile_id="nope") is None
    assert koala.stats().dropped["filtered"] == 1
    assert koala.stats().dropped["invalid"] == 1


# The request context of the sync integrations, in process


def wsgi_environ(**extra: str) -> dict[str, Any]:
    return {
        "wsgi.url_scheme": "https",
        "HTTP_HOST": "acme.com",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/pricing",
        "QUERY_STRING": "plan=pro",
        "REMOTE_ADDR": "203.0.113.9",
        "HTTP_USER_AGENT": "UA/1",
        "HTTP_REFERER": "https://g.co/",
        "HTTP_COOKIE": f"ko_id={PID}",
        **extra,
    }


VISITOR = {
    "ip": "203.0.113.9",
    "userAgent": "UA/1",
    "page": {
        "url": "https://acme.com/pricing?plan=pro",
        "path": "/pricing",
        "referrer": "https://g.co/",
        "search": "?plan=pro",
    },
    "library": LIBRARY,
}


def test_the_wsgi_middleware_makes_calls_about_the_visitor(recorder: Recorder) -> None:
    from koala_async.wsgi import KoalaMiddleware

    koala = sync(recorder, strict=True)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        koala.page(name="Pricing")
        start_response("200 OK", [])
        return [b""]

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
        return lambda data: None

    KoalaMiddleware(app)(wsgi_environ(), start_response)
    with pytest.raises(ValidationError, match="pass profile_id"):
        koala.page(name="After the request")  # the context ended with it
    koala.close()
    [body] = recorder.bodies()
    assert body["ip"] == "203.0.113.9"
    assert body["page_views"][0]["context"] == VISITOR


def test_flask_sets_the_context_after_proxyfix(recorder: Recorder) -> None:
    pytest.importorskip("flask")
    from flask import Flask
    from werkzeug.middleware.proxy_fix import ProxyFix

    from koala_async.flask import Koala

    koala = sync(recorder, strict=True)
    app = Flask(__name__)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    Koala(app, client=koala)  # added after ProxyFix: still sees the forwarded address

    @app.get("/pricing")
    def pricing() -> str:
        koala.track("Viewed Pricing")
        return ""

    headers = {"X-Forwarded-For": "198.51.100.7", "User-Agent": "UA/1", "Referer": "https://g.co/"}
    app.test_client().get("/pricing?plan=pro", headers=headers, base_url="https://acme.com")
    with pytest.raises(ValidationError, match="pass profile_id"):
        koala.track("After the request")  # teardown ended the context
    koala.close()
    [body] = recorder.bodies()
    assert body["ip"] == "198.51.100.7"
    assert body["events"][0]["context"] == {**VISITOR, "ip": "198.51.100.7"}


def through_django(recorder: Recorder, path: str, **meta: Any) -> dict[str, Any]:
    """The body sent for a track call in a view behind the Django middleware."""
    django = pytest.importorskip("django")
    from django.conf import settings
    from django.http import HttpResponse
    from django.test import RequestFactory, override_settings

    from koala_async.django import KoalaMiddleware

    if not settings.configured:
        settings.configure(KOALA={"enabled": False})
        django.setup()
    koala = sync(recorder, strict=True)

    def view(request: Any) -> HttpResponse:
        koala.track("Viewed")
        return HttpResponse()

    with override_settings(ALLOWED_HOSTS=["acme.com"]):
        KoalaMiddleware(view)(RequestFactory().get(path, **meta))
    with pytest.raises(ValidationError, match="pass profile_id"):
        koala.track("After the request")  # the context ended with it
    koala.close()
    [body] = recorder.bodies()
    return body


def test_django_middleware_makes_calls_about_the_visitor(recorder: Recorder) -> None:
    body = through_django(
        recorder,
        "/pricing?plan=pro",
        HTTP_HOST="acme.com",
        REMOTE_ADDR="203.0.113.9",
        HTTP_USER_AGENT="UA/1",
        HTTP_REFERER="https://g.co/",
        HTTP_COOKIE=f"ko_id={OTHER}",
        secure=True,
    )
    assert body == {"profile_id": OTHER, "ip": "203.0.113.9", "events": body["events"]}
    assert body["events"][0]["context"] == VISITOR


def test_a_django_request_for_an_unknown_host_sends_no_url(recorder: Recorder) -> None:
    body = through_django(recorder, "/x", HTTP_HOST="evil.example", REMOTE_ADDR="bad")
    assert "ip" not in body
    assert body["events"][0]["context"]["page"] == {"path": "/x"}
