"""AWS Lambda, an ASGI app (FastAPI here; Starlette alike) through Mangum, with KoalaClient.

Mangum runs the app's lifespan around every invocation (``lifespan="auto"``): startup opens a
``KoalaClient`` (``koala_lifespan``), shutdown closes it, and closing delivers everything
queued (within ``shutdown_timeout``) before Mangum returns the response to Lambda. Nothing is
left queued when the container is frozen, so nothing waits across a freeze; the price is a
new connection to Koala per invocation (docs/how-to/serverless.md gives the figures).

Deploy with ``handler = examples.lambda_asgi.handler``; set ``KOALA_PUBLIC_API_KEY``.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from mangum import Mangum
from pydantic import BaseModel

from koala_async.fastapi import Koala, KoalaMiddleware, ProfileId, koala_lifespan

app = FastAPI(
    lifespan=koala_lifespan(
        public_api_key=os.environ.get("KOALA_PUBLIC_API_KEY", "pk_example"),
        base_url=os.environ.get("KOALA_BASE_URL", "http://127.0.0.1:8787"),
        user_agent="acme-lambda-asgi-example/1.0",
        shutdown_timeout=2.0,  # what closing may add to an invocation, at most
    )
)
app.add_middleware(KoalaMiddleware)


class Signup(BaseModel):
    email: str
    plan: str = "free"


@app.post("/signup")
async def signup(person: Signup, koala: Koala, profile_id: ProfileId) -> dict[str, str | None]:
    await koala.identify(profile_id=profile_id, email=person.email)
    message_id = await koala.track("Signed Up", properties={"plan": person.plan})
    return {"profile_id": profile_id, "message_id": message_id}


# Lambda's entry point: API Gateway (REST or HTTP API), ALB and Function URL events.
handler = Mangum(app, lifespan="auto")
