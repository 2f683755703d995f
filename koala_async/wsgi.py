"""The ``ko_id`` cookie and the request context for any WSGI app (Flask, Django, Pyramid,
Bottle, ...): no framework needed.

::

    app = KoalaMiddleware(app, domain=".example.com")

    def view(environ, start_response):
        koala.page(name="Home")  # the request's visitor, ip, user agent and page
        profile_id = environ["koala.profile_id"]

The visitor's ip is ``REMOTE_ADDR``: behind a proxy, put a middleware that sets it from a
trusted ``X-Forwarded-For`` outside this one (werkzeug's ``ProxyFix(app, x_for=1)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextvars import Token
from typing import TYPE_CHECKING, Any, Literal

from ._context import RequestContext, reset_request_context, set_request_context
from ._cookie import TWO_YEARS, CookiePolicy, sets_ko_id

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["PROFILE_ID", "KoalaMiddleware", "set_environ_context"]

PROFILE_ID = "koala.profile_id"
"""The ``environ`` key holding the visitor's profile id."""


class KoalaMiddleware:
    """Give every request a Koala profile id, from the ``ko_id`` cookie or a new UUID v4.

    The id is put in ``environ["koala.profile_id"]``; a new or invalid cookie is replaced
    with a ``Set-Cookie`` on the response, next to the app's own headers (a ``ko_id`` the
    app sets itself wins). While the app is called, the visitor's profile id, ip
    (``REMOTE_ADDR``), user agent and page (url, path, and the ``Referer`` as referrer) are
    the request context (see :func:`koala_async.set_request_context`) that a client's person
    calls use; ``request_context=False`` leaves it alone. (A response body the app streams
    after returning is produced outside it.) The other keywords are those of the ASGI
    ``KoalaMiddleware``; a bad one raises ``ValidationError`` when the middleware is built.
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
        request_context: bool = True,
    ) -> None:
        self.app = app
        self.policy = CookiePolicy(domain, path, max_age, same_site, secure, http_only)
        self.request_context = request_context

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        https = environ.get("wsgi.url_scheme") == "https"
        profile_id, set_cookie = self.policy.resolve(environ.get("HTTP_COOKIE"), https)
        environ[PROFILE_ID] = profile_id
        if not self.request_context:
            return self._call(environ, start_response, set_cookie)
        # A WSGI server runs each request in one thread: a contextvar set here is this
        # request's alone, until the reset.
        token = set_environ_context(environ, profile_id)
        try:
            return self._call(environ, start_response, set_cookie)
        finally:
            reset_request_context(token)

    def _call(
        self, environ: WSGIEnvironment, start_response: StartResponse, set_cookie: str | None
    ) -> Iterable[bytes]:
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


def set_environ_context(
    environ: Mapping[str, Any], profile_id: str | None
) -> Token[RequestContext | None]:
    """Make the visitor of a WSGI request the request context; returns the token to reset."""
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST")
    if not host and environ.get("SERVER_NAME"):
        port = environ.get("SERVER_PORT")
        default = "443" if scheme == "https" else "80"
        host = environ["SERVER_NAME"] + (f":{port}" if port and port != default else "")
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "") or "/"
    query = environ.get("QUERY_STRING")
    search = f"?{query}" if query else None
    return set_request_context(
        profile_id=profile_id,
        ip=environ.get("REMOTE_ADDR"),
        user_agent=environ.get("HTTP_USER_AGENT"),
        page={
            "url": f"{scheme}://{host}{path}{search or ''}" if host else None,
            "path": path,
            "referrer": environ.get("HTTP_REFERER"),
            "search": search,
        },
    )
