"""The ``ko_id`` cookie for any ASGI app (Starlette, FastAPI, Quart, ...): a pure ASGI middleware.

::

    app = Starlette(middleware=[Middleware(KoalaMiddleware, domain=".example.com")])

    async def handler(request):
        profile_id = request.state.koala_profile_id
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

from ._cookie import TWO_YEARS, CookiePolicy, sets_ko_id

__all__ = ["KoalaMiddleware"]

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
    itself wins). Websocket and lifespan scopes pass through untouched. Keywords are those of
    ``CookiePolicy``; a bad one raises ``ValidationError`` when the middleware is built.
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
