"""Starlette (and FastAPI) integration: the ``ko_id`` middleware, a lifespan that opens and
flushes the client, and helpers to reach both from a request.

::

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from koala_async.starlette import KoalaMiddleware, koala_lifespan, get_koala, get_profile_id

    app = Starlette(
        lifespan=koala_lifespan(user_agent="acme-app/2.3.0"),
        middleware=[Middleware(KoalaMiddleware, domain=".acme.com")],
    )

    async def signup(request):
        await get_koala(request).track("Signed Up", profile_id=get_profile_id(request))
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from ._optional import require

require("starlette", "starlette")

from starlette.requests import HTTPConnection  # noqa: E402 - after the check that names the extra

from ._client import KoalaClient  # noqa: E402
from .asgi import KoalaMiddleware  # noqa: E402

__all__ = ["KoalaMiddleware", "get_koala", "get_profile_id", "koala_lifespan"]


def koala_lifespan(**client_options: Any) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A lifespan that opens a :class:`KoalaClient` at startup and flushes it at shutdown.

    The client is ``app.state.koala``; keywords go to :class:`KoalaClient` (the key and base
    URL default to ``KOALA_PUBLIC_API_KEY`` and ``KOALA_BASE_URL``). To combine with a
    lifespan of your own, enter ``KoalaClient`` in it the same way.
    """

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with KoalaClient(**client_options) as koala:
            app.state.koala = koala
            yield

    return lifespan


def get_koala(request: HTTPConnection) -> KoalaClient:
    """The app's client: ``app.state.koala`` (set by :func:`koala_lifespan`), else ``koala``
    in the lifespan state, which also reaches apps mounted inside the one that opened it."""
    koala: KoalaClient | None = getattr(request.app.state, "koala", None)
    if koala is None:
        koala = request.scope.get("state", {}).get("koala")
    if koala is None:
        raise RuntimeError(
            "no KoalaClient on app.state.koala: pass lifespan=koala_lifespan(...) to the app, "
            "or set app.state.koala in your own lifespan (in an app mounted inside another, "
            'yield {"koala": koala} from the outer lifespan instead)'
        )
    return koala


def get_profile_id(request: HTTPConnection) -> str:
    """The visitor's Koala profile id, set by :class:`KoalaMiddleware`."""
    profile_id = request.scope.get("state", {}).get("koala_profile_id")
    if profile_id is None:
        if request.scope["type"] != "http":
            raise RuntimeError(
                "KoalaMiddleware gives profile ids to HTTP requests only; in a websocket, "
                "read the ko_id cookie from websocket.cookies"
            )
        raise RuntimeError("no koala_profile_id on the request: add KoalaMiddleware to the app")
    return str(profile_id)
