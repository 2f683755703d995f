"""A Flask signup flow that reports to Koala with KoalaSyncClient.

By default it sends to a local collector, so it runs as it is::

    koala-async collector                                              # terminal 1
    gunicorn --preload -w 2 -b 127.0.0.1:8000 examples.flask_app:app   # terminal 2
    curl -c jar -b jar localhost:8000/pricing
    curl -c jar -b jar -H 'Content-Type: application/json' \
        -d '{"email": "ada@acme.com"}' localhost:8000/signup

The client is made at import time, before gunicorn forks its workers: each worker starts its
own delivery thread on its first call, and delivers what is queued when it exits (SIGTERM).
Calls in a request are about its visitor: their ip, user agent and page go with them.
Behind a proxy, ``TRUSTED_PROXIES=1`` (one proxy: nginx, a load balancer) makes werkzeug's
``ProxyFix`` take the visitor's address from ``X-Forwarded-For``; gunicorn itself leaves
``REMOTE_ADDR`` as the proxy's.
For Koala itself: ``KOALA_BASE_URL=https://api2.getkoala.com KOALA_PUBLIC_API_KEY=pk_...``.
"""

from __future__ import annotations

import os

from flask import Flask, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from koala_async import KoalaSyncClient
from koala_async.flask import Koala

koala = KoalaSyncClient(
    public_api_key=os.environ.get("KOALA_PUBLIC_API_KEY", "pk_example"),
    base_url=os.environ.get("KOALA_BASE_URL", "http://127.0.0.1:8787"),
    user_agent="acme-flask-example/1.0",
    flush_interval=float(os.environ.get("KOALA_FLUSH_INTERVAL", "1")),
)
app = Flask(__name__)
Koala(app, client=koala, domain=os.environ.get("COOKIE_DOMAIN") or None)
if proxies := int(os.environ.get("TRUSTED_PROXIES", "0")):
    # Trust exactly that many X-Forwarded-* hops: more would let a visitor pick their ip.
    app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
        app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies
    )


@app.get("/")
@app.get("/pricing")
def page() -> dict[str, str]:
    koala.page(name="Pricing" if request.path == "/pricing" else "Home")  # the visitor's
    return {"profile_id": g.koala_profile_id}


@app.post("/signup")
def signup() -> dict[str, str]:
    data = request.get_json()
    email, profile_id = data.get("email"), g.koala_profile_id
    # A bad email drops these calls (logged, counted as invalid): the signup itself goes on.
    koala.identify(profile_id=profile_id, email=email, traits={"plan": data.get("plan", "free")})
    message_id = koala.track("Signed Up", profile_id=profile_id, email=email)
    return {"profile_id": profile_id, "message_id": message_id or ""}
