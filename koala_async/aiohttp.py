"""aiohttp integration: the ``ko_id`` middleware and a ``cleanup_ctx`` that opens and flushes
the client.

::

    from aiohttp import web
    from koala_async.aiohttp import KOALA, PROFILE_ID, koala_context, koala_middleware

    app = web.Application(middlewares=[koala_middleware(domain=".acme.com")])
    app.cleanup_ctx.append(koala_context(user_agent="acme-app/2.3.0"))

    async def signup(request: web.Request) -> web.Response:
        await request.app[KOALA].track("Signed Up", profile_id=request[PROFILE_ID])
        return web.Response(text="ok")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from ._optional import require

require("aiohttp", "aiohttp")

from aiohttp import web  # noqa: E402 - after the check that names the extra
from aiohttp.typedefs import Middleware  # noqa: E402

from ._client import KoalaClient  # noqa: E402
from ._cookie import TWO_YEARS, CookiePolicy  # noqa: E402

__all__ = ["KOALA", "PROFILE_ID", "koala_context", "koala_middleware"]

KOALA = web.AppKey("koala", KoalaClient)
"""Where :func:`koala_context` keeps the client: ``request.app[KOALA]``."""

PROFILE_ID: Any = (
    web.RequestKey("koala_profile_id", str) if hasattr(web, "RequestKey") else "koala_profile_id"
)
"""Where :func:`koala_middleware` puts the visitor's profile id: ``request[PROFILE_ID]``
(a typed key on aiohttp 3.13+, the string ``"koala_profile_id"`` before)."""

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
    responses raised as ``web.HTTPException``). Keywords are those of ``CookiePolicy``.
    """
    policy = CookiePolicy(domain, path, max_age, same_site, secure, http_only)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        profile_id, set_cookie = policy.resolve(request.headers.get("Cookie"), request.secure)
        request[PROFILE_ID] = profile_id
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if set_cookie is not None:
                exc.headers.add("Set-Cookie", set_cookie)
            raise
        if set_cookie is not None:
            response.headers.add("Set-Cookie", set_cookie)
        return response

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
