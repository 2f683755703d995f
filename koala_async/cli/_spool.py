"""``koala-async spool PATH``: what a spool holds; ``--send`` delivers it, ``--export`` writes
it as importer lines (JSONL), e.g. to inspect it or to import it elsewhere."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from .._calls import IDENTIFIES
from .._client import KoalaClient
from .._spool import inspect, rows
from ._options import connection_options, key, plural

__all__ = ["add_parser", "importer_line"]


def add_parser(commands: Any) -> argparse.ArgumentParser:
    spool: argparse.ArgumentParser = commands.add_parser(
        "spool", help="show what a spool file holds; --send delivers it, --export writes it"
    )
    spool.add_argument("path", type=Path, help="the spool file (KoalaClient(spool=...))")
    what = spool.add_mutually_exclusive_group()
    what.add_argument("--send", action="store_true", help="deliver it to --base-url, then exit")
    what.add_argument(
        "--export", type=Path, metavar="FILE", help="write its entries to FILE as importer JSONL"
    )
    spool.add_argument(
        "--timeout", type=float, default=60.0, help="--send gives up after SECONDS (default 60)"
    )
    connection_options(spool)
    spool.set_defaults(run=_spool)
    return spool


def importer_line(
    field: str,
    key: str,
    secondary_name: str,
    secondary: str | None,
    kind: int,
    raw: bytes,
    ip: str | None = None,
) -> dict[str, Any]:
    """A spooled entry as a line ``koala-async import`` reads (it keeps message_id and sent_at,
    so importing it after a partial delivery sends no duplicates Koala keeps)."""
    entry = json.loads(raw)
    call = entry.pop("type")
    if field in ("domain", "account_id"):
        call = "account_identify" if kind == IDENTIFIES else "account_track"
    line: dict[str, Any] = {"kind": call, field: key}
    if secondary is not None:
        line[secondary_name] = secondary
    if ip is not None:
        line["ip"] = ip
    line.update(entry)
    return line


def _describe(path: Path) -> str:
    summary = inspect(str(path))
    text = (
        f"{path}: {plural(summary.entries, 'entry')}, {summary.bytes:,} bytes of entries, "
        f"{summary.people:,} {'person or account' if summary.people == 1 else 'people or accounts'}"
    )
    if summary.oldest is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(summary.oldest))
        text += f", the oldest from {when}"
    return text


async def _spool(args: argparse.Namespace) -> int:
    path: Path = args.path
    print(_describe(path))
    if args.export is not None:
        count = 0
        with args.export.open("w", encoding="utf-8") as out:
            for row in rows(str(path)):
                out.write(json.dumps(importer_line(*row)) + "\n")
                count += 1
        print(f"exported {plural(count, 'entry')} to {args.export}")
        return 0
    if not args.send:
        return 0
    if not args.verbose:
        logging.getLogger("koala_async").setLevel(logging.ERROR)  # we say what happened
    async with KoalaClient(
        key(args),
        base_url=args.base_url,
        user_agent=args.user_agent,
        spool=path,
        shutdown_timeout=args.timeout,
    ) as koala:
        pass  # opening takes the spool over; closing delivers it, within --timeout
    stats = koala.stats()
    print(f"delivered {plural(stats.delivered, 'entry')}", end="")
    dropped = {reason: n for reason, n in stats.dropped.items() if n}
    if dropped:
        print(f"; dropped {', '.join(f'{n} {reason}' for reason, n in dropped.items())}", end="")
    print(f"; {plural(stats.spooled, 'entry')} still in the spool" if stats.spooled else "")
    return 0 if not stats.spooled and not dropped else 1
