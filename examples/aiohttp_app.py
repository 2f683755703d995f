"""An aiohttp signup flow that reports to Koala.

By default it sends to a local collector, so it runs as it is::

    koala-async collector               # terminal 1: prints what arrives
    python examples/aiohttp_app.py      # terminal 2
    curl -c jar -b jar localhost:8080/
    curl -c jar -b jar -H 'Content-Type: application/json' \
        -d '{"email": "ada@acme.com", "workspace": "marketing"}' localhost:8080/signup

For Koala itself: ``KOALA_BASE_URL=https://api2.getkoala.com KOALA_PUBLIC_API_KEY=pk_...``.
Behind a proxy, ``FORWARDED_ALLOW_IPS`` (as uvicorn's option: the proxies' addresses, or
``*``) makes the app take the visitor's address from the proxy's ``X-Forwarded-For``.
``COOKIE_DOMAIN=.example.com`` shares the visitor's ``ko_id`` with Koala's pixel on the
other subdomains. SIGTERM or Ctrl-C flushes everything still queued before the process exits.
"""

from __future__ import annotations

import os
import re
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from koala_async.aiohttp import KOALA, PROFILE_ID, koala_context, koala_middleware

routes = web.RouteTableDef()
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


async def read_person(request: web.Request) -> dict[str, Any]:
    try:
        person = await request.json()
    except ValueError:
        person = None
    # The app checks its own input. (koala-async would not raise on a bad email: it drops
    # that call and logs why, so analytics never fails a request; strict=True raises.)
    if not isinstance(person, dict) or not EMAIL.fullmatch(str(person.get("email"))):
        raise web.HTTPBadRequest(text='send JSON like {"email": "ada@acme.com"}')
    return person


def forwarded(trusted: str) -> Middleware:
    """Take the visitor's address from ``X-Forwarded-For`` when the peer is a trusted proxy
    (``trusted``: comma-separated addresses, or ``*``), as uvicorn's ``--proxy-headers``
    does; the ``ko_id`` middleware then reads it as ``request.remote``."""
    proxies = {ip.strip() for ip in trusted.split(",")}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        chain = request.headers.get("X-Forwarded-For")
        if chain and ("*" in proxies or request.remote in proxies):
            hops = [hop.strip() for hop in chain.split(",")]
            # The nearest hop that is not a trusted proxy is the visitor.
            client = next((h for h in reversed(hops) if h not in proxies), hops[0])
            request = request.clone(remote=client)
        return await handler(request)

    return middleware


@routes.get("/")
@routes.get("/pricing")
async def page(request: web.Request) -> web.Response:
    # No ids needed: the visitor's profile id, ip, user agent, url and referrer come from the
    # request context koala_middleware set.
    await request.config_dict[KOALA].page(name="Pricing" if request.path == "/pricing" else "Home")
    return web.json_response({"profile_id": request[PROFILE_ID]})


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    koala, profile_id = request.config_dict[KOALA], request[PROFILE_ID]
    email = (await read_person(request))["email"]
    # Ties the anonymous visitor (ko_id) to the person, across browsers and devices. With an
    # email, the visitor is not assumed: pass the profile_id to tie them.
    await koala.identify(profile_id=profile_id, email=email)
    await koala.track("Logged In", profile_id=profile_id, email=email)
    return web.json_response({"profile_id": profile_id})


@routes.post("/signup")
async def signup(request: web.Request) -> web.Response:
    koala, profile_id = request.config_dict[KOALA], request[PROFILE_ID]
    person = await read_person(request)
    email, domain = person["email"], person["email"].rpartition("@")[2]
    plan = {"plan": str(person.get("plan", "free"))}
    await koala.identify(profile_id=profile_id, email=email, traits=plan)
    await koala.track("Signed Up", properties=plan)  # the request's visitor
    # group_id tells apart several workspaces of one company (one Koala account per domain).
    group_id = str(person.get("workspace", "default"))
    await koala.account_identify(domain=domain, group_id=group_id, traits=plan)
    await koala.account_track("Workspace Created", domain=domain, properties=plan)
    return web.json_response({"profile_id": profile_id})


def make_app() -> web.Application:
    """The app; ``web.run_app`` runs the cleanup (flush and close) on SIGTERM and Ctrl-C."""
    proxies = forwarded(os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"))
    cookie = koala_middleware(domain=os.environ.get("COOKIE_DOMAIN"))
    app = web.Application(middlewares=[proxies, cookie])  # the first one runs first
    app.add_routes(routes)
    app.cleanup_ctx.append(
        koala_context(
            public_api_key=os.environ.get("KOALA_PUBLIC_API_KEY", "pk_example"),
            base_url=os.environ.get("KOALA_BASE_URL", "http://127.0.0.1:8787"),
            user_agent="acme-aiohttp-example/1.0",
            flush_interval=float(os.environ.get("KOALA_FLUSH_INTERVAL", "1")),
        )
    )
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
