"""``koala-async collector``: a local Koala that prints what arrives and flags violations, and
its totals (entries and unique message_ids by key, kind and type) on exit, on SIGUSR1 and
at ``GET /_totals``."""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from .. import KoalaError
from ..testing import FakeCollector, Received, Reply, Totals
from ._options import color

__all__ = ["add_parser", "describe", "short_key", "totals_text"]


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


class _Collector(FakeCollector):
    """Prints each request (and appends it to ``--jsonl``), counts it in :attr:`running`,
    then forgets it: a collector may run for days. ``GET /_totals`` answers the totals."""

    def __init__(self, out: Any) -> None:
        super().__init__()
        self.out = out
        self.running = Totals()

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        if method == "GET" and path == "/_totals":
            body = {"requests": self.running.requests, "refused": self.running.refused}
            return Reply(body=json.dumps({**body, "totals": self.running.rows()}).encode())
        reply = super().handle(method, path, headers, raw)
        received = self.requests[-1]
        self.running.add(received)
        print(describe(received), flush=True)
        if self.out is not None:
            record = {
                "time": time.time(),
                "kind": received.kind,
                "key": short_key(received.key),
                "user_agent": headers.get("user-agent"),
                "status": received.status,
                "body": received.body,
                "violations": list(received.violations),
            }
            self.out.write(json.dumps(record) + "\n")
            self.out.flush()
        self.reset()
        return reply


async def _collector(args: argparse.Namespace) -> int:
    out = args.jsonl.open("a", encoding="utf-8") if args.jsonl else None
    fake = _Collector(out)
    try:
        async with fake.serve(args.host, args.port) as url:
            print(f"koala-async collector listening on {url}; set KOALA_BASE_URL={url}", flush=True)
            print(f"totals: kill -USR1 {os.getpid()}, or GET {url}/_totals", flush=True)
            with anyio.open_signal_receiver(
                signal.SIGINT, signal.SIGTERM, signal.SIGUSR1
            ) as signals:
                async for signum in signals:
                    print(totals_text(fake.running), flush=True)
                    if signum != signal.SIGUSR1:
                        break
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise KoalaError(f"port {args.port} is in use; pass --port") from None
        raise KoalaError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    finally:
        if out is not None:
            out.close()
    return 0


def totals_text(totals: Totals) -> str:
    """The totals as a table: one line per key, kind and entry type."""
    lines = [f"totals: {totals.requests:,} requests, {totals.refused:,} refused"]
    for row in totals.rows():
        lines.append(
            f"  {short_key(row['key']):<10} {row['kind']:<8} {row['type']:<9} "
            f"entries {row['entries']:>10,}  unique ids {row['unique_ids']:>10,}"
        )
    return "\n".join(lines)


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
