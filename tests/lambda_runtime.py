"""A stand-in for AWS Lambda's runtime, for tests and benchmarks: it loads a handler
(``module:name``), then runs one invocation per line of stdin (a JSON event) and writes the
handler's JSON answer as one line of stdout. Between lines it waits, as a container waits
to be thawed; the test freezes it there with SIGSTOP. The line ``stats`` answers with the
module's ``koala.stats()`` instead."""

from __future__ import annotations

import importlib
import json
import sys
import time
from typing import Any

import msgspec


class Context:
    """The part of Lambda's context object the examples use."""

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def main() -> None:
    path, _, name = sys.argv[1].partition(":")
    module = importlib.import_module(path)
    handler: Any = getattr(module, name)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            answer = msgspec.to_builtins(module.koala.stats())
        else:
            answer = handler(json.loads(line), Context(30.0))
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()


def http_event(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event: a POST of ``body`` as JSON."""
    headers = {"content-type": "application/json", "host": "api.acme.test", "user-agent": "t/1"}
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "http": {"method": "POST", "path": path, "sourceIp": "203.0.113.5"},
            "stage": "$default",
        },
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }
