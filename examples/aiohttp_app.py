"""An aiohttp signup flow that reports to Koala.

By default it sends to a local collector, so it runs as it is::

    koala-async collector               # terminal 1: prints what arrives
    python examples/aiohttp_app.py      # terminal 2
    curl -c jar -b jar localhost:8080/
    curl -c jar -b jar -H 'Content-Type: application/json' \
        -d '{"email": "ada@acme.com", "workspace": "marketing"}' localhost:8080/signup

For Koala itself: ``KOALA_BASE_URL=https://api2.getkoala.com KOALA_PUBLIC_API_KEY=pk_...``.
``COOKIE_DOMAIN=.example.com`` shares the visitor's ``ko_id`` with Koala's pixel on the
other subdomains. SIGTERM or Ctrl-C flushes everything still queued before the process exits.
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from koala_async import ValidationError
from koala_async.aiohttp import KOALA, PROFILE_ID, koala_context, koala_middleware

routes = web.RouteTableDef()


async def read_person(request: web.Request) -> dict[str, Any]:
    try:
        person = await request.json()
    except ValueError:
        person = None
    if not isinstance(person, dict) or not isinstance(person.get("email"), str):
        raise web.HTTPBadRequest(text='send JSON like {"email": "ada@acme.com"}')
    return person


@web.middleware
async def bad_input(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ValidationError as exc:
        # koala_async checks input at the call, e.g. an email Koala would not take.
        raise web.HTTPBadRequest(text=str(exc)) from exc


@routes.get("/")
@routes.get("/pricing")
async def page(request: web.Request) -> web.Response:
    profile_id = request[PROFILE_ID]
    name = "Pricing" if request.path == "/pricing" else "Home"
    await request.config_dict[KOALA].page(
        profile_id=profile_id, name=name, properties={"url": str(request.url)}
    )
    return web.json_response({"profile_id": profile_id})


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    koala, profile_id = request.config_dict[KOALA], request[PROFILE_ID]
    email = (await read_person(request))["email"]
    # Ties the anonymous visitor (ko_id) to the person, across browsers and devices.
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
    await koala.track("Signed Up", profile_id=profile_id, properties=plan)
    # group_id tells apart several workspaces of one company (one Koala account per domain).
    group_id = str(person.get("workspace", "default"))
    await koala.account_identify(domain=domain, group_id=group_id, traits=plan)
    await koala.account_track("Workspace Created", domain=domain, properties=plan)
    return web.json_response({"profile_id": profile_id})


def make_app() -> web.Application:
    """The app; ``web.run_app`` runs the cleanup (flush and close) on SIGTERM and Ctrl-C."""
    cookie = koala_middleware(domain=os.environ.get("COOKIE_DOMAIN"))
    app = web.Application(middlewares=[cookie, bad_input])
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
