"""An aiohttp signup flow that reports to Koala.

Run it against a local collector (``koala-async collector`` in another terminal)::

    KOALA_BASE_URL=http://127.0.0.1:8787 KOALA_PUBLIC_API_KEY=pk_test \
        python examples/aiohttp_app.py
    curl -c jar -b jar localhost:8080/
    curl -c jar -b jar -H 'Content-Type: application/json' \
        -d '{"email": "ada@acme.com"}' localhost:8080/signup

SIGTERM or Ctrl-C flushes everything still queued before the process exits.
"""

from __future__ import annotations

import os

from aiohttp import web

from koala_async.aiohttp import KOALA, PROFILE_ID, koala_context, koala_middleware

routes = web.RouteTableDef()


@routes.get("/")
@routes.get("/pricing")
async def page(request: web.Request) -> web.Response:
    profile_id = request[PROFILE_ID]
    name = "Pricing" if request.path == "/pricing" else "Home"
    await request.app[KOALA].page(
        profile_id=profile_id, name=name, properties={"url": str(request.url)}
    )
    return web.json_response({"profile_id": profile_id})


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    koala, profile_id = request.app[KOALA], request[PROFILE_ID]
    email = (await request.json())["email"]
    await koala.identify(profile_id=profile_id, email=email)
    await koala.track("Logged In", profile_id=profile_id, email=email)
    return web.json_response({"profile_id": profile_id})


@routes.post("/signup")
async def signup(request: web.Request) -> web.Response:
    koala, profile_id = request.app[KOALA], request[PROFILE_ID]
    person = await request.json()
    email, plan = person["email"], person.get("plan", "free")
    domain = email.rsplit("@", 1)[1]
    await koala.identify(profile_id=profile_id, email=email, traits={"plan": plan})
    await koala.track("Signed Up", profile_id=profile_id, properties={"plan": plan})
    await koala.account_identify(domain=domain, group_id="default", traits={"plan": plan})
    await koala.account_track("Workspace Created", domain=domain, properties={"plan": plan})
    return web.json_response({"profile_id": profile_id})


def make_app() -> web.Application:
    app = web.Application(middlewares=[koala_middleware(domain=os.environ.get("COOKIE_DOMAIN"))])
    app.add_routes(routes)
    app.cleanup_ctx.append(
        koala_context(
            public_api_key=os.environ.get("KOALA_PUBLIC_API_KEY", "pk_example"),
            user_agent="acme-aiohttp-example/1.0",
            flush_interval=float(os.environ.get("KOALA_FLUSH_INTERVAL", "1")),
        )
    )
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
