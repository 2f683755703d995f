"""The ``ko_id`` cookie for any ASGI app (Starlette, FastAPI, Quart, ...): a pure ASGI middleware.

::

    app = Starlette(middleware=[Middleware(KoalaMiddleware, domain=".example.com")])

    async def handler(request):
        profile_id = request.state.koala_profile_id
        await koala.page(name="Pricing")  # the request's visitor, ip, user agent and page

Behind a proxy, the visitor's address reaches the app only if the server trusts the proxy's
headers: ``uvicorn --proxy-headers --forwarded-allow-ips <proxy ip>`` (hypercorn and others
have the same switch) puts it in ``scope["client"]``, where this middleware reads it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import Token
from typing import TYPE_CHECKING, Any, Literal

import anyio.to_thread

from ._context import RequestContext, reset_request_context, set_request_context
from ._cookie import TWO_YEARS, CookiePolicy, sets_ko_id

if TYPE_CHECKING:
    from ._sync import KoalaSyncClient

__all__ = ["KoalaMiddleware", "close_on_shutdown"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class KoalaMiddleware:
    """Give every HTTP request a Koala profile id, from the ``ko_id`` cookie or a new UUID v4.

    The id is put in ``scope["state"]["koala_profile_id"]`` (so ``request.state
    .koala_profile_id`` in Starlette and FastAPI); a new or invalid cookie is replaced with a
    ``Set-Cookie`` on the response, next to the app's own headers (a ``ko_id`` the app sets
    itself wins). While the app handles the request, the visitor's profile id, ip
    (``scope["client"]``), user agent and page (url, path, and the ``Referer`` as referrer)
    are the request context (see :func:`koala_async.set_request_context`) that the client's
    person calls use. Websocket and lifespan scopes pass through untouched. Keywords are
    those of ``CookiePolicy``; a bad one raises ``ValidationError`` when the middleware is
    built.
    """

    def __init__(
        self,
        app: ASGIApp,
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookies = b"; ".join(value for name, value in scope["headers"] if name == b"cookie")
        https = scope.get("scheme") == "https"
        profile_id, set_cookie = self.policy.resolve(cookies.decode("latin-1"), https)
        scope.setdefault("state", {})["koala_profile_id"] = profile_id
        token = _set_context(scope, profile_id)
        try:
            await self._call(scope, receive, send, set_cookie)
        finally:
            reset_request_context(token)

    async def _call(
        self, scope: Scope, receive: Receive, send: Send, set_cookie: str | None
    ) -> None:
        if set_cookie is None:
            await self.app(scope, receive, send)
            return
        header = (b"set-cookie", set_cookie.encode("latin-1"))

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                if not any(
                    name.lower() == b"set-cookie" and sets_ko_id(value.decode("latin-1"))
                    for name, value in headers
                ):
                    message = {**message, "headers": [*headers, header]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _set_context(scope: Scope, profile_id: str) -> Token[RequestContext | None]:
    """Make the visitor of an HTTP scope the request context."""
    user_agent = referrer = host = None
    for name, value in scope["headers"]:
        if name == b"user-agent":
            user_agent = value.decode("latin-1")
        elif name == b"referer":
            referrer = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
    if host is None and scope.get("server"):
        server_host, port = scope["server"]
        host = f"{server_host}:{port}" if port else server_host
    path = scope.get("path", "/")
    root = scope.get("root_path", "")
    full = path if path.startswith(root) else root + path
    query = scope.get("query_string", b"").decode("latin-1")
    search = f"?{query}" if query else None
    client = scope.get("client")
    return set_request_context(
        profile_id=profile_id,
        ip=client[0] if client else None,
        user_agent=user_agent,
        page={
            "url": f"{scope.get('scheme', 'http')}://{host}{full}{search or ''}" if host else None,
            "path": path,
            "referrer": referrer,
            "search": search,
        },
    )


def close_on_shutdown(app: ASGIApp, koala: KoalaSyncClient) -> ASGIApp:
    """Close ``koala`` when the ASGI server shuts down: for sync code under an ASGI server
    (Django's ASGI app under uvicorn, hypercorn, gunicorn's uvicorn workers).

    uvicorn re-raises SIGTERM once it has shut down, so ``atexit`` never runs there; the
    lifespan's shutdown does. This answers the lifespan itself (the app never sees it: for
    an app with a lifespan of its own, close the client there instead), closing the client
    within its ``shutdown_timeout`` in a thread, so the server's loop goes on meanwhile::

        application = close_on_shutdown(get_asgi_application(), get_koala())
    """

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await anyio.to_thread.run_sync(koala.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    return wrapped
