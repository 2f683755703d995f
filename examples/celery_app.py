"""Celery tasks that report to Koala with KoalaSyncClient.

By default the broker is a local Redis and the client sends to a local collector::

    koala-async collector                                          # terminal 1
    celery -A examples.celery_app worker --concurrency 2           # terminal 2
    python -c 'from examples.celery_app import charge; charge.delay("ada@acme.com", 12)'

The client is made at import time; each worker process starts its own delivery thread on
its first call, and ``connect`` closes it, within ``shutdown_timeout``, when the worker
process ends (a warm shutdown: SIGTERM, or Ctrl-C once).
"""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-untyped]

from koala_async import KoalaSyncClient
from koala_async.celery import connect

app = Celery("koala_example", broker=os.environ.get("BROKER_URL", "redis://127.0.0.1:6379/0"))
koala = KoalaSyncClient(
    public_api_key=os.environ.get("KOALA_PUBLIC_API_KEY", "pk_example"),
    base_url=os.environ.get("KOALA_BASE_URL", "http://127.0.0.1:8787"),
    user_agent="acme-celery-example/1.0",
    flush_interval=float(os.environ.get("KOALA_FLUSH_INTERVAL", "1")),
)
connect(koala)


@app.task  # type: ignore[untyped-decorator]
def charge(email: str, cents: int, message_id: str | None = None) -> str | None:
    """Charge a customer (not really) and tell Koala."""
    return koala.track("Charged", email=email, properties={"cents": cents}, message_id=message_id)
