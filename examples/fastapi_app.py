"""A FastAPI signup flow that reports to Koala.

Run it against a local collector (``koala-async collector`` in another terminal)::

    KOALA_BASE_URL=http://127.0.0.1:8787 KOALA_PUBLIC_API_KEY=pk_test \
        uvicorn examples.fastapi_app:app --port 8000
    curl -c jar -b jar localhost:8000/
    curl -c jar -b jar -H 'Content-Type: application/json' \
        -d '{"email": "ada@acme.com"}' localhost:8000/signup

SIGTERM or Ctrl-C flushes everything still queued before the process exits.
"""

from __future__ import annotations

import os

from fastapi import FastAPI, Request
from pydantic import BaseModel

from koala_async.fastapi import Koala, KoalaMiddleware, ProfileId, koala_lifespan

app = FastAPI(
    lifespan=koala_lifespan(
        public_api_key=os.environ.get("KOALA_PUBLIC_API_KEY", "pk_example"),
        user_agent="acme-fastapi-example/1.0",
        flush_interval=float(os.environ.get("KOALA_FLUSH_INTERVAL", "1")),
    )
)
app.add_middleware(KoalaMiddleware, domain=os.environ.get("COOKIE_DOMAIN"))


class Person(BaseModel):
    email: str
    plan: str = "free"


@app.get("/")
@app.get("/pricing")
async def page(request: Request, koala: Koala, profile_id: ProfileId) -> dict[str, str]:
    name = "Pricing" if request.url.path == "/pricing" else "Home"
    await koala.page(profile_id=profile_id, name=name, properties={"url": str(request.url)})
    return {"profile_id": profile_id}


@app.post("/login")
async def login(person: Person, koala: Koala, profile_id: ProfileId) -> dict[str, str]:
    await koala.identify(profile_id=profile_id, email=person.email)
    await koala.track("Logged In", profile_id=profile_id, email=person.email)
    return {"profile_id": profile_id}


@app.post("/signup")
async def signup(person: Person, koala: Koala, profile_id: ProfileId) -> dict[str, str]:
    domain = person.email.rsplit("@", 1)[1]
    await koala.identify(profile_id=profile_id, email=person.email, traits={"plan": person.plan})
    await koala.track("Signed Up", profile_id=profile_id, properties={"plan": person.plan})
    await koala.account_identify(domain=domain, group_id="default", traits={"plan": person.plan})
    await koala.account_track("Workspace Created", domain=domain, properties={"plan": person.plan})
    return {"profile_id": profile_id}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
