"""AWS Lambda, a plain handler: KoalaSyncClient, flushed before each invocation returns.

Lambda freezes the container as soon as the handler returns and thaws it for the next
invocation (or never): nothing runs in between, so what is still queued at the return waits
frozen, and is lost if the container is reclaimed. So the handler flushes before returning,
bounded by the time the invocation has left. The client is made once per container (the
cold start) and reused while it is warm; its delivery thread and kept-alive connection
freeze and thaw with it. A connection the server closed meanwhile is replaced at the next
request without an error (the request had not reached the server, so it is sent again).

Deploy with ``handler = examples.lambda_sync.handler`` (or copy this file); set
``KOALA_PUBLIC_API_KEY`` (and nothing else: the base URL defaults to Koala's API). Locally it
sends to ``koala-async collector``; ``python examples/lambda_sync.py`` runs one invocation.
"""

from __future__ import annotations

import os
from typing import Any

from koala_async import KoalaSyncClient

FLUSH_TIMEOUT = 2.0  # seconds a flush may add to an invocation, at most
MARGIN = 0.5  # seconds kept for returning before Lambda's own deadline

# Once per container: made at the cold start, reused by every warm invocation.
koala = KoalaSyncClient(
    public_api_key=os.environ.get("KOALA_PUBLIC_API_KEY", "pk_example"),
    base_url=os.environ.get("KOALA_BASE_URL", "http://127.0.0.1:8787"),
    user_agent="acme-lambda-example/1.0",
)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Track a signup, then deliver it before Lambda freezes the container."""
    message_id = koala.track(
        "Signed Up", email=event["email"], properties={"plan": event.get("plan", "free")}
    )
    timeout = FLUSH_TIMEOUT
    if context is not None:  # never past the invocation's own deadline
        timeout = min(timeout, context.get_remaining_time_in_millis() / 1000 - MARGIN)
    # What a flush cut short by its timeout did not deliver stays queued, and is sent by the
    # next invocation's flush, if the container is thawed again.
    result = koala.flush(timeout=max(timeout, 0.0))
    return {"message_id": message_id, "delivered": result.delivered, "pending": result.pending}


if __name__ == "__main__":
    print(handler({"email": "ada@acme.com"}, None))
