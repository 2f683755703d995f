"""A FastAPI signup flow that reports to Koala.

By default it sends to a local collector, so it runs as it is::

    koala-async collector                       # terminal 1: prints what arrives
    uvicorn examples.fastapi_app:app --port 8000  # terminal 2
    curl -c jar -b jar localhost:8000/
    curl -c jar -b jar -H 'Content-Type: application/json' \
        -d '{"email": "ada@acme.com", "workspace": "marketing"}' localhost:8000/signup

For Koala itself: ``KOALA_BASE_URL=https://api2.getkoala.com KOALA_PUBLIC_API_KEY=pk_...``.
Behind a proxy (a load balancer, nginx), let uvicorn take the visitor's address from the
proxy's ``X-Forwarded-For``: ``--proxy-headers --forwarded-allow-ips <the proxy's ip>``.
``COOKIE_DOMAIN=.example.com`` shares the visitor's ``ko_id`` with Koala's pixel on the
other subdomains. SIGTERM or Ctrl-C flushes everything still queued before the process exits.
"""

from __future__ import annotations

import os
import re

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

from koala_async.fastapi import Koala, KoalaMiddleware, ProfileId, koala_lifespan

app = FastAPI(
    # Opens the client at startup; at shutdown (SIGTERM too) flushes what is queued, then closes.
    lifespan=koala_lifespan(
        public_api_key=os.environ.get("KOALA_PUBLIC_API_KEY", "pk_example"),
        base_url=os.environ.get("KOALA_BASE_URL", "http://127.0.0.1:8787"),
        user_agent="acme-fastapi-example/1.0",
        flush_interval=float(os.environ.get("KOALA_FLUSH_INTERVAL", "1")),
    )
)
# Gives each request the visitor's ko_id, and makes the visitor (id, ip, user agent, page)
# the context of the calls made while handling it.
app.add_middleware(KoalaMiddleware, domain=os.environ.get("COOKIE_DOMAIN"))
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class Login(BaseModel):
    email: str


def address(email: str) -> str:
    # The app checks its own input. (koala-async would not raise on a bad email: it drops
    # that call and logs why, so analytics never fails a request; strict=True raises.)
    if not EMAIL.fullmatch(email):
        raise HTTPException(400, "send an email address like ada@acme.com")
    return email


class Signup(Login):
    plan: str = "free"
    workspace: str = "default"


@app.get("/")
@app.get("/pricing")
async def page(request: Request, koala: Koala, profile_id: ProfileId) -> dict[str, str]:
    # No ids needed: the visitor's profile id, ip, user agent, url and referrer come from the
    # request context KoalaMiddleware set.
    await koala.page(name="Pricing" if request.url.path == "/pricing" else "Home")
    return {"profile_id": profile_id}


@app.post("/login")
async def login(person: Login, koala: Koala, profile_id: ProfileId) -> dict[str, str]:
    # Ties the anonymous visitor (ko_id) to the person, across browsers and devices. With an
    # email, the visitor is not assumed: pass the profile_id to tie them.
    await koala.identify(profile_id=profile_id, email=address(person.email))
    await koala.track("Logged In", profile_id=profile_id, email=person.email)
    return {"profile_id": profile_id}


@app.post("/signup")
async def signup(person: Signup, koala: Koala, profile_id: ProfileId) -> dict[str, str]:
    domain = address(person.email).rpartition("@")[2]
    plan = {"plan": person.plan}
    await koala.identify(profile_id=profile_id, email=person.email, traits=plan)
    await koala.track("Signed Up", properties=plan)  # the request's visitor
    # group_id tells apart several workspaces of one company (one Koala account per domain).
    await koala.account_identify(domain=domain, group_id=person.workspace, traits=plan)
    await koala.account_track("Workspace Created", domain=domain, properties=plan)
    return {"profile_id": profile_id}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
