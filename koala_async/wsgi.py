"""The ``ko_id`` cookie for any WSGI app (Flask, Django, Pyramid, Bottle, ...): no framework needed.

::

    app = KoalaMiddleware(app, domain=".example.com")

    def view(environ, start_response):
        profile_id = environ["koala.profile_id"]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal

from ._cookie import TWO_YEARS, CookiePolicy, sets_ko_id

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["PROFILE_ID", "KoalaMiddleware"]

PROFILE_ID = "koala.profile_id"
"""The ``environ`` key holding the visitor's profile id."""


class KoalaMiddleware:
    """Give every request a Koala profile id, from the ``ko_id`` cookie or a new UUID v4.

    The id is put in ``environ["koala.profile_id"]``; a new or invalid cookie is replaced
    with a ``Set-Cookie`` on the response, next to the app's own headers (a ``ko_id`` the
    app sets itself wins). Keywords are those of the ASGI ``KoalaMiddleware``; a bad one
    raises ``ValidationError`` when the middleware is built.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        domain: str | None = None,
        path: str = "/",
        max_age: int = TWO_YEARS,
        same_site: Literal["Lax", "Strict", "None"] = "Lax",
        secure: bool | None = None,
        http_only: bool = False,
    ) -> None:
        self.app = app
        self.policy = CookiePolicy(domain, path, max_age, same_site, secure, http_only)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        https = environ.get("wsgi.url_scheme") == "https"
        profile_id, set_cookie = self.policy.resolve(environ.get("HTTP_COOKIE"), https)
        environ[PROFILE_ID] = profile_id
        # Request context (ip, userAgent, page) for koala_async._context would be set here.
        if set_cookie is None:
            return self.app(environ, start_response)

        def start_with_cookie(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None, /
        ) -> Callable[[bytes], object]:
            if not any(
                name.lower() == "set-cookie" and sets_ko_id(value) for name, value in headers
            ):
                headers = [*headers, ("Set-Cookie", set_cookie)]
            return start_response(status, headers, exc_info)

        return self.app(environ, start_with_cookie)
