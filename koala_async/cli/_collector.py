"""``koala-async collector``: a local Koala that prints what arrives and flags violations."""

from __future__ import annotations

import argparse
import errno
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from .._exceptions import KoalaError
from ..testing import FakeCollector, Received, Reply
from ..testing._http_server import serve_http
from ._options import color

__all__ = ["add_parser", "describe", "short_key"]


def add_parser(commands: Any) -> argparse.ArgumentParser:
    collector: argparse.ArgumentParser = commands.add_parser(
        "collector", help="run a local fake Koala collector"
    )
    collector.add_argument("--host", default="127.0.0.1")
    collector.add_argument("--port", type=int, default=8787)
    collector.add_argument("--jsonl", type=Path, help="also append every request to this file")
    collector.set_defaults(run=_collector)
    return collector


def short_key(key: str) -> str:
    """Enough of a public key to tell keys apart in a log, not enough to use it."""
    return f"{key[:4]}…{key[-2:]}" if len(key) > 8 else "…"


async def _collector(args: argparse.Namespace) -> int:
    fake = FakeCollector()
    out = args.jsonl.open("a", encoding="utf-8") if args.jsonl else None

    def handle(method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        reply = fake.handle(method, path, headers, raw)
        received = fake.requests[-1]
        print(describe(received), flush=True)
        if out is not None:
            record = {
                "time": time.time(),
                "kind": received.kind,
                "key": short_key(received.key),
                "user_agent": headers.get("user-agent"),
                "status": received.status,
                "body": received.body,
                "violations": list(received.violations),
            }
            out.write(json.dumps(record) + "\n")
            out.flush()
        fake.reset()  # keep nothing: a collector may run for days
        return reply

    try:
        async with serve_http(handle, args.host, args.port) as url:
            print(f"koala-async collector listening on {url}; set KOALA_BASE_URL={url}", flush=True)
            await anyio.sleep(math.inf)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise KoalaError(f"port {args.port} is in use; pass --port") from None
        raise KoalaError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    finally:
        if out is not None:
            out.close()
    return 0  # pragma: no cover - only a signal ends it


def describe(received: Received) -> str:
    """One line per request: status, person, counts and event names; then every violation."""
    body = received.body
    who = ", ".join(
        f"{field}={body[field]}"
        for field in ("profile_id", "email", "domain", "account_id", "ip")
        if field in body
    )
    counts = []
    for kind in ("events", "identifies", "page_views"):
        entries = body.get(kind)
        if isinstance(entries, list) and entries:
            names = sorted(
                {str(e.get("event") or e.get("name")) for e in entries if isinstance(e, dict)}
                - {"None"}
            )
            shown = f" ({', '.join(names[:5])}{', …' if len(names) > 5 else ''})" if names else ""
            counts.append(f"{kind}={len(entries)}{shown}")
    status = received.status or "reset"
    line = f"{time.strftime('%H:%M:%S')} {status} {received.kind:<7} {who} {' '.join(counts)}"
    for problem in received.violations:
        line += "\n  " + color(f"spec violation: {problem}", "31", sys.stdout)
    return line
