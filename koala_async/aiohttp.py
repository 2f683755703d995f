"""aiohttp integration: the ``ko_id`` middleware and a ``cleanup_ctx`` that opens and flushes
the client.

::

    from aiohttp import web
    from koala_async.aiohttp import KOALA, PROFILE_ID, koala_context, koala_middleware

    app = web.Application(middlewares=[koala_middleware(domain=".acme.com")])
    app.cleanup_ctx.append(koala_context(user_agent="acme-app/2.3.0"))

    async def signup(request: web.Request) -> web.Response:
        await request.config_dict[KOALA].track("Signed Up", profile_id=request[PROFILE_ID])
        return web.Response(text="ok")

``request.config_dict[KOALA]`` also finds the client from handlers of sub-apps
(``app.add_subapp``), where ``request.app`` is the sub-app.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from ._optional import require

require("aiohttp", "aiohttp")

from aiohttp import web  # noqa: E402 - after the check that names the extra
from aiohttp.typedefs import Middleware  # noqa: E402

from ._client import KoalaClient  # noqa: E402
from ._context import reset_request_context, set_request_context  # noqa: E402
from ._cookie import COOKIE, TWO_YEARS, CookiePolicy, sets_ko_id  # noqa: E402

__all__ = ["KOALA", "PROFILE_ID", "koala_context", "koala_middleware"]

KOALA = web.AppKey("koala", KoalaClient)
"""Where :func:`koala_context` keeps the client: ``request.config_dict[KOALA]``."""

PROFILE_ID: Any = (
    web.RequestKey("koala_profile_id", str) if hasattr(web, "RequestKey") else "koala_profile_id"
)
"""Where :func:`koala_middleware` puts the visitor's profile id: ``request[PROFILE_ID]``
(a typed key on aiohttp 3.13+, the string ``"koala_profile_id"`` before)."""

logger = logging.getLogger("koala_async.aiohttp")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def koala_middleware(
    *,
    domain: str | None = None,
    path: str = "/",
    max_age: int = TWO_YEARS,
    same_site: Literal["Lax", "Strict", "None"] = "Lax",
    secure: bool | None = None,
    http_only: bool = False,
) -> Middleware:
    """A middleware giving each request a Koala profile id, as ``request[PROFILE_ID]``.

    It comes from the ``ko_id`` cookie, or is a new UUID v4 set on the response (also on
    responses raised as ``web.HTTPException``; a ``ko_id`` the handler sets itself wins).
    A response whose headers the handler sent itself (``await response.prepare(request)``)
    cannot take the cookie; that is logged once (websockets quietly get none, as in ASGI).
    While the handler runs, the visitor's profile id, ip (``request.remote``: behind a proxy,
    have a middleware before this one set it from the proxy's headers, as
    ``examples/aiohttp_app.py`` does), user agent and page (url, path, and the ``Referer`` as
    referrer) are the request context that the client's person calls use.
    Keywords are those of ``CookiePolicy``; a bad one raises ``ValidationError`` here.
    """
    policy = CookiePolicy(domain, path, max_age, same_site, secure, http_only)
    warned = False

    def add_cookie(request: web.Request, response: web.StreamResponse, set_cookie: str) -> None:
        nonlocal warned
        if response.prepared:
            # Too late for headers. Websockets are expected (as in ASGI, they get no cookie).
            if not warned and not isinstance(response, web.WebSocketResponse):
                warned = True
                logger.warning(
                    "a new visitor's ko_id cookie was not set on %s %s: the handler sent the "
                    "headers itself (a streamed response); later cases are not logged",
                    request.method,
                    request.path,
                )
            return
        if COOKIE in response.cookies or any(
            sets_ko_id(value) for value in response.headers.getall("Set-Cookie", ())
        ):
            return
        response.headers.add("Set-Cookie", set_cookie)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        cookies = "; ".join(request.headers.getall("Cookie", ()))
        profile_id, set_cookie = policy.resolve(cookies, request.secure)
        request[PROFILE_ID] = profile_id
        headers = request.headers
        token = set_request_context(
            profile_id=profile_id,
            ip=request.remote,
            user_agent=headers.get("User-Agent"),
            page={
                "url": str(request.url),
                "path": request.path,
                "referrer": headers.get("Referer"),
                "search": f"?{request.query_string}" if request.query_string else None,
            },
        )
        try:
            if set_cookie is None:
                return await handler(request)
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                add_cookie(request, exc, set_cookie)
                raise
            add_cookie(request, response, set_cookie)
            return response
        finally:
            reset_request_context(token)

    return middleware


def koala_context(
    **client_options: Any,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry: opens a :class:`KoalaClient` at startup as ``app[KOALA]`` and
    flushes and closes it at cleanup. Keywords go to :class:`KoalaClient`."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with KoalaClient(**client_options) as koala:
            app[KOALA] = koala
            yield

    return context
