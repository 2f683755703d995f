"""FastAPI integration: handler parameters for the client and the visitor's profile id.

::

    from fastapi import FastAPI
    from koala_async.fastapi import Koala, KoalaMiddleware, ProfileId, koala_lifespan

    app = FastAPI(lifespan=koala_lifespan(user_agent="acme-app/2.3.0"))
    app.add_middleware(KoalaMiddleware, domain=".acme.com")

    @app.post("/signup")
    async def signup(email: str, koala: Koala, profile_id: ProfileId) -> dict[str, str]:
        await koala.identify(profile_id=profile_id, email=email)
        return {"ok": "yes"}
"""

from __future__ import annotations

from typing import Annotated

from ._optional import require

require("fastapi", "fastapi")

from fastapi import Depends  # noqa: E402 - after the check that names the extra
from starlette.requests import HTTPConnection  # noqa: E402

from ._client import KoalaClient  # noqa: E402
from .starlette import KoalaMiddleware, get_koala, get_profile_id, koala_lifespan  # noqa: E402

__all__ = ["Koala", "KoalaMiddleware", "ProfileId", "koala_lifespan"]


# Coroutines on purpose: FastAPI runs a plain ``def`` dependency in its thread pool; taking
# both parameters then cost ~245 us per request instead of ~16 us (httpx ASGI transport).
async def _koala(connection: HTTPConnection) -> KoalaClient:
    return get_koala(connection)


async def _profile_id(connection: HTTPConnection) -> str:
    return get_profile_id(connection)


Koala = Annotated[KoalaClient, Depends(_koala)]
"""A handler parameter that receives the app's :class:`KoalaClient`."""

ProfileId = Annotated[str, Depends(_profile_id)]
"""A handler parameter that receives the visitor's Koala profile id (the ``ko_id`` cookie)."""
