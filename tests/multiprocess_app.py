"""A WSGI app for tests/test_metrics_multiprocess.py: gunicorn imports it in each worker (no
--preload), so each has its own client and copies its health into prometheus_client's
multiprocess files; /metrics serves what every worker copied."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from koala_async import KoalaSyncClient
from koala_async.prometheus import mirror_to_multiprocess

koala = KoalaSyncClient(user_agent="multiprocess-test/1.0")
mirror = mirror_to_multiprocess(koala, interval=0.05)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        message_id = koala.track("Signed Up", email=f"{os.getpid()}@acme.com")
        koala.flush()
        time.sleep(0.05)  # hold the worker a while, so the other one takes requests too
        body = json.dumps({"message_id": message_id, "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
