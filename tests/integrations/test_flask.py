"""Flask: the extension in process (cookie, ``g``, the client from config), and the example
app under ``gunicorn --preload -w 2`` with its client made at import time, before the fork."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
from sync_support import collector, gunicorn, message_ids, post_signups

pytest.importorskip("flask")

from flask import Flask, g

from koala_async import KoalaSyncClient, ValidationError
from koala_async.flask import Koala, get_koala
from koala_async.testing import FakeCollector

PROFILE = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"


def make_app(client: KoalaSyncClient | None = None, domain: str | None = None) -> Flask:
    app = Flask(__name__)
    app.config["KOALA"] = {"public_api_key": "pk_test", "enabled": False}
    Koala(app, client=client, domain=domain)

    @app.get("/")
    def home() -> dict[str, str]:
        get_koala().track("Viewed", profile_id=g.koala_profile_id)
        return {"profile_id": g.koala_profile_id}

    return app


def test_a_bad_cookie_keyword_raises_at_construction_even_for_an_app_factory() -> None:
    with pytest.raises(ValidationError, match="domain must be a host name"):
        Koala(domain="not a domain")  # init_app(app) would come later, in create_app()
    koala = Koala(domain=".acme.com")
    app = Flask(__name__)
    app.config["KOALA"] = {"public_api_key": "pk_test", "enabled": False}
    koala.init_app(app)

    @app.get("/")
    def home() -> str:
        return "ok"

    assert "Domain=.acme.com" in app.test_client().get("/").headers["Set-Cookie"]


def test_a_new_visitor_gets_a_cookie_and_a_known_one_keeps_theirs() -> None:
    app = make_app()
    browser = app.test_client()
    first = browser.get("/")
    profile_id = first.get_json()["profile_id"]
    assert first.headers["Set-Cookie"].startswith(f"ko_id={profile_id}; Path=/; Max-Age=")
    again = browser.get("/")
    assert again.get_json()["profile_id"] == profile_id
    assert "Set-Cookie" not in again.headers
    browser.set_cookie("ko_id", PROFILE.upper())
    assert browser.get("/").get_json()["profile_id"] == PROFILE
    shared = make_app(domain=".acme.com").test_client().get("/")
    assert "; Domain=.acme.com; SameSite=Lax" in shared.headers["Set-Cookie"]


def test_the_client_comes_from_config_or_is_the_one_given() -> None:
    app = make_app()
    with app.app_context():
        made = get_koala()
    assert isinstance(made, KoalaSyncClient)
    assert made.track("Viewed", profile_id=PROFILE, message_id="m1") == "m1"  # enabled=False
    assert made.stats().accepted == 0
    fake = FakeCollector()
    given = KoalaSyncClient("pk_test", http_client=httpx.AsyncClient(transport=fake.transport()))
    app = make_app(given)
    app.test_client().get("/")
    given.close()
    assert [e.event for e in fake.events] == ["Viewed"]


def test_gunicorn_preload_two_workers_sigterm_delivers_every_event(tmp_path: Path) -> None:
    with (
        collector(tmp_path) as (base_url, received),
        gunicorn("examples.flask_app:app", base_url, tmp_path / "gunicorn.log") as (server, url),
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
