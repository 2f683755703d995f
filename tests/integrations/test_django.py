"""Django: the middleware and ``get_koala()`` in process, and the example project under
``gunicorn --preload -w 2``: SIGTERM, and every event is at the collector."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from sync_support import collector, gunicorn, message_ids, post_signups

pytest.importorskip("django")

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

if not settings.configured:
    settings.configure(
        KOALA={"public_api_key": "pk_test", "enabled": False},
        KOALA_COOKIE={"domain": ".acme.com"},
        ALLOWED_HOSTS=["*"],
    )
    django.setup()

from koala_async import KoalaSyncClient
from koala_async.django import KoalaMiddleware, get_koala

PROFILE = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"


def view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.koala_profile_id)  # type: ignore[attr-defined]


def test_a_new_visitor_gets_a_cookie_and_a_known_one_keeps_theirs() -> None:
    middleware = KoalaMiddleware(view)
    first = middleware(RequestFactory().get("/"))
    profile_id = first.content.decode()  # type: ignore[attr-defined]
    cookie = first.cookies["ko_id"]
    assert (cookie.value, cookie["domain"], cookie["samesite"]) == (profile_id, ".acme.com", "Lax")
    assert not cookie["secure"]
    assert not cookie["httponly"]
    known = RequestFactory().get("/", HTTP_COOKIE=f"ko_id={PROFILE.upper()}")
    again = middleware(known)
    assert again.content.decode() == PROFILE  # type: ignore[attr-defined]
    assert "ko_id" not in again.cookies
    secure = middleware(RequestFactory().get("/", secure=True))
    assert secure.cookies["ko_id"]["secure"]


def test_a_ko_id_the_view_sets_itself_wins() -> None:
    def own(request: HttpRequest) -> HttpResponse:
        response = HttpResponse()
        response.set_cookie("ko_id", PROFILE)
        return response

    response = KoalaMiddleware(own)(RequestFactory().get("/"))
    assert response.cookies["ko_id"].value == PROFILE


def test_get_koala_makes_one_client_from_settings() -> None:
    koala = get_koala()
    assert isinstance(koala, KoalaSyncClient)
    assert get_koala() is koala
    assert koala.track("Viewed", profile_id=PROFILE, message_id="m1") == "m1"


def test_gunicorn_preload_two_workers_sigterm_delivers_every_event(tmp_path: Path) -> None:
    app = "examples.django_app.wsgi:application"
    with (
        collector(tmp_path) as (base_url, received),
        gunicorn(app, base_url, tmp_path / "gunicorn.log") as (server, url),
    ):
        tracked = post_signups(url, 400)
        assert message_ids(received) == {}, "an hour's flush interval: nothing sent yet"
        server.send_signal(signal.SIGTERM)
        returncode = server.wait(timeout=30)
        output = (tmp_path / "gunicorn.log").read_text()
        assert returncode == 0, output
        arrived = message_ids(received)
    assert len(set(tracked)) == 400
    assert {m: arrived[m] for m in tracked} == dict.fromkeys(tracked, 1), output
    assert sum(arrived.values()) == 800  # and an identify with each
