"""Flask integration: an extension that makes the client, the ``ko_id`` cookie and ``g``.

::

    from flask import Flask, g
    from koala_async.flask import Koala, get_koala

    app = Flask(__name__)
    app.config["KOALA"] = {"user_agent": "acme-app/2.3.0"}  # KoalaSyncClient's keywords
    Koala(app, domain=".acme.com")  # or: koala = Koala(domain=...); koala.init_app(app)

    @app.post("/signup")
    def signup():
        get_koala().track("Signed Up")  # the request's visitor, ip, user agent and page

Behind a proxy, let werkzeug's ``ProxyFix`` set the visitor's address from the headers of
the proxies you trust: ``app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from ._context import reset_request_context
from ._optional import require

require("flask", "flask")

from flask import Flask, current_app, g, request  # noqa: E402 - after the check naming the extra

from ._cookie import TWO_YEARS, CookiePolicy  # noqa: E402
from ._sync import KoalaSyncClient  # noqa: E402
from .wsgi import PROFILE_ID, KoalaMiddleware, set_environ_context  # noqa: E402

__all__ = ["Koala", "get_koala"]

EXTENSION = "koala"


class Koala:
    """The Flask extension: one :class:`KoalaSyncClient` per app, and the ``ko_id`` cookie.

    The client is ``client`` if given, else made from ``app.config["KOALA"]`` (a dict of
    KoalaSyncClient's keywords; the key and URL default to ``KOALA_PUBLIC_API_KEY`` and
    ``KOALA_BASE_URL``). It is closed at interpreter exit, within its ``shutdown_timeout``.
    Each request gets ``g.koala_profile_id``, and its visitor (profile id, ip from
    ``request.remote_addr``, user agent and page) is the request context while Flask
    handles it, so person calls that name nobody are about that visitor. The cookie keywords
    are the WSGI ``KoalaMiddleware``'s.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        client: KoalaSyncClient | None = None,
        domain: str | None = None,
        path: str = "/",
        max_age: int = TWO_YEARS,
        same_site: Literal["Lax", "Strict", "None"] = "Lax",
        secure: bool | None = None,
        http_only: bool = False,
    ) -> None:
        self._client = client
        # Checked now, even when init_app comes later (an app factory): a bad keyword
        # raises where it was written.
        self._cookie = CookiePolicy(domain, path, max_age, same_site, secure, http_only)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Give ``app`` its client, the cookie middleware and ``g.koala_profile_id``."""
        client = self._client or KoalaSyncClient(**app.config.get("KOALA", {}))
        app.extensions[EXTENSION] = client
        # The context is set in before_request, not in the WSGI middleware: by then every
        # middleware has run, ProxyFix too, wherever it was added.
        app.wsgi_app = KoalaMiddleware(  # type: ignore[method-assign]
            app.wsgi_app, request_context=False, **dataclasses.asdict(self._cookie)
        )
        app.before_request(_begin)
        app.teardown_request(_end)

    @property
    def client(self) -> KoalaSyncClient:
        """The current app's client."""
        return get_koala()


def _begin() -> None:
    g.koala_profile_id = profile_id = request.environ[PROFILE_ID]
    g.koala_context = set_environ_context(request.environ, profile_id)


def _end(exc: BaseException | None) -> None:
    # Flask runs before_request, the view and teardown in one thread and one context.
    token = g.pop("koala_context", None)
    if token is not None:
        reset_request_context(token)


def get_koala() -> KoalaSyncClient:
    """The current app's client (inside a request or an app context)."""
    client: KoalaSyncClient = current_app.extensions[EXTENSION]
    return client
