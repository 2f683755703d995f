"""Django integration: the client from ``settings.KOALA``, and a middleware for the ``ko_id``.

::

    # settings.py
    KOALA = {"user_agent": "acme-app/2.3.0"}  # KoalaSyncClient's keywords
    KOALA_COOKIE = {"domain": ".acme.com"}  # optional: the cookie middleware's keywords
    MIDDLEWARE = [..., "koala_async.django.KoalaMiddleware"]

    # views.py
    from koala_async.django import get_koala

    def signup(request):
        get_koala().track("Signed Up")  # the request's visitor, ip, user agent and page

The visitor's ip is ``REMOTE_ADDR``. Behind a proxy, put a middleware that sets it from a
trusted ``X-Forwarded-For`` before this one (Django leaves that to you);
``SECURE_PROXY_SSL_HEADER`` makes the page's url ``https://`` where the proxy says so.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import Token

from ._optional import require

require("django", "django")

from django.conf import settings  # noqa: E402 - after the check that names the extra
from django.core.exceptions import DisallowedHost  # noqa: E402
from django.http import HttpRequest, HttpResponseBase  # noqa: E402

from ._context import RequestContext, reset_request_context, set_request_context  # noqa: E402
from ._cookie import COOKIE, CookiePolicy  # noqa: E402
from ._sync import KoalaSyncClient  # noqa: E402

__all__ = ["KoalaMiddleware", "get_koala"]

_client: KoalaSyncClient | None = None
_lock = threading.Lock()


def get_koala() -> KoalaSyncClient:
    """The process's client, made on first use from ``settings.KOALA`` (a dict of
    KoalaSyncClient's keywords). Closed at interpreter exit, within ``shutdown_timeout``;
    safe under forking servers (gunicorn ``--preload``): each process delivers its own."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = KoalaSyncClient(**getattr(settings, "KOALA", {}))
    return _client


class KoalaMiddleware:
    """Give every request a Koala profile id, ``request.koala_profile_id``, from the
    ``ko_id`` cookie or a new UUID v4, set on the response (a ``ko_id`` the view sets itself
    wins). Cookie options come from ``settings.KOALA_COOKIE`` (the keywords of
    ``koala_async.wsgi.KoalaMiddleware``); a bad one raises ``ValidationError`` at startup.
    While the view runs, the visitor's profile id, ip (``REMOTE_ADDR``), user agent and page
    (url, path, and the ``Referer`` as referrer) are the request context that the client's
    person calls use: ``get_koala().page(name="Home")`` needs no ids.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.policy = CookiePolicy(**getattr(settings, "KOALA_COOKIE", {}))

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        policy = self.policy
        https = request.is_secure()
        profile_id, set_cookie = policy.resolve(request.headers.get("Cookie"), https)
        request.koala_profile_id = profile_id  # type: ignore[attr-defined]
        token = _set_context(request, profile_id)
        try:
            response = self.get_response(request)
        finally:
            reset_request_context(token)
        if set_cookie is not None and COOKIE not in response.cookies:
            response.set_cookie(
                COOKIE,
                profile_id,
                max_age=policy.max_age,
                path=policy.path,
                domain=policy.domain or None,
                secure="; Secure" in set_cookie,  # the policy's rule: https, or SameSite=None
                httponly=policy.http_only,
                samesite=policy.same_site,
            )
        return response


def _set_context(request: HttpRequest, profile_id: str) -> Token[RequestContext | None]:
    """Make the visitor of a Django request the request context."""
    try:
        url: str | None = request.build_absolute_uri()
    except DisallowedHost:  # not in ALLOWED_HOSTS: Django answers 400 itself, later
        url = None
    query = request.META.get("QUERY_STRING")
    return set_request_context(
        profile_id=profile_id,
        ip=request.META.get("REMOTE_ADDR"),
        user_agent=request.headers.get("User-Agent"),
        page={
            "url": url,
            "path": request.path,
            "referrer": request.headers.get("Referer"),
            "search": f"?{query}" if query else None,
        },
    )
