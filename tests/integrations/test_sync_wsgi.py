"""The framework-free WSGI middleware for the ``ko_id`` cookie."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from koala_async import ValidationError
from koala_async.wsgi import PROFILE_ID, KoalaMiddleware

PROFILE = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"
Headers = list[tuple[str, str]]


def app(own_cookie: str | None = None) -> Callable[..., Iterable[bytes]]:
    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers: Headers = [("Content-Type", "text/plain")]
        if own_cookie is not None:
            headers.append(("Set-Cookie", own_cookie))
        start_response("200 OK", headers)
        return [environ[PROFILE_ID].encode()]

    return wsgi


def call(
    middleware: KoalaMiddleware, cookie: str | None = None, scheme: str = "http"
) -> tuple[str, Headers]:
    environ: dict[str, Any] = {"wsgi.url_scheme": scheme}
    if cookie is not None:
        environ["HTTP_COOKIE"] = cookie
    started: list[Headers] = []

    def start_response(status: str, headers: Headers, exc_info: object = None) -> Any:
        started.append(headers)
        return lambda data: None

    body = b"".join(middleware(environ, start_response))
    return body.decode(), started[0]


def cookies(headers: Headers) -> list[str]:
    return [value for name, value in headers if name.lower() == "set-cookie"]


def test_a_new_visitor_gets_an_id_and_a_cookie() -> None:
    profile_id, headers = call(KoalaMiddleware(app(), domain=".acme.com"))
    assert cookies(headers) == [
        f"ko_id={profile_id}; Path=/; Max-Age=63072000; Domain=.acme.com; SameSite=Lax"
    ]


def test_a_known_visitor_keeps_their_id_and_gets_no_cookie() -> None:
    profile_id, headers = call(KoalaMiddleware(app()), f"a=1; ko_id={PROFILE.upper()}")
    assert profile_id == PROFILE
    assert cookies(headers) == []


def test_https_makes_the_cookie_secure_and_the_apps_own_ko_id_wins() -> None:
    _, headers = call(KoalaMiddleware(app()), scheme="https")
    assert cookies(headers)[0].endswith("; Secure")
    own = f"ko_id={PROFILE}; Path=/"
    _, headers = call(KoalaMiddleware(app(own)))
    assert cookies(headers) == [own]


def test_a_bad_option_is_refused_when_built() -> None:
    with pytest.raises(ValidationError, match="domain"):
        KoalaMiddleware(app(), domain="acme.com; evil")
