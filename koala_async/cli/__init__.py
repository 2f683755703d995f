"""The ``koala-async`` command: collector, send, import and demo. Standard library only."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from .._client import KoalaClient
from ..testing import FakeCollector, Received, Reply
from .._exceptions import DeliveryError, KoalaError
from ..testing._http_server import serve_http
from ._read import KINDS, Call, calls_from_csv, calls_from_jsonl, dead_letters
from .._redact import redact
from .._retry import RetryPolicy
from .._stats import DeliveryFailure

__all__ = ["main"]

DEMO_KEY = "pk_demo"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (0 success, 1 not all delivered, 2 misuse)."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.INFO if args.verbose else None)
    try:
        return int(anyio.run(args.run, args))
    except KoalaError as exc:
        print(f"koala-async: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="koala-async", description="Send to Koala, backfill files, or run a local collector."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the client does")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="send sample traffic to an in-process collector")
    demo.add_argument("--people", type=int, default=50, help="visitors to simulate (default 50)")
    demo.set_defaults(run=_demo)

    collector = commands.add_parser("collector", help="run a local fake Koala collector")
    collector.add_argument("--host", default="127.0.0.1")
    collector.add_argument("--port", type=int, default=8787)
    collector.add_argument("--jsonl", type=Path, help="also append every request to this file")
    collector.set_defaults(run=_collector)

    send = commands.add_parser("send", help="make one call, e.g. send track 'Signed Up' --email …")
    send.add_argument("kind", choices=[k.replace("_", "-") for k in KINDS])
    send.add_argument("event", nargs="?", help="the event name, for track and account-track")
    for name in ("profile_id", "email", "domain", "account_id", "name", "group_id", "message_id"):
        send.add_argument(f"--{name.replace('_', '-')}", dest=name)
    send.add_argument("--sent-at", dest="sent_at", help="ISO 8601 time (default: now)")
    send.add_argument("--prop", action="append", default=[], metavar="KEY=VALUE")
    send.add_argument("--trait", action="append", default=[], metavar="KEY=VALUE")
    send.add_argument(
        "--timeout", type=float, default=15.0, help="give up after SECONDS (default 15)"
    )
    _connection_options(send)
    send.set_defaults(run=_send)

    load = commands.add_parser("import", help="backfill calls from a JSONL or CSV file")
    load.add_argument("file", type=Path)
    load.add_argument("--format", choices=["jsonl", "csv"], help="default: from the file name")
    load.add_argument("--kind", choices=list(KINDS), help="CSV: the call every row makes")
    load.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="CSV: fill a call argument (or properties.X / traits.X) from a column",
    )
    load.add_argument(
        "--dead-letter", type=Path, help="append failures here (default: FILE.dead.jsonl)"
    )
    load.add_argument(
        "--start-line",
        type=int,
        default=1,
        metavar="N",
        help="skip the lines (CSV: rows) before N, to resume an interrupted import",
    )
    load.add_argument("--dry-run", action="store_true", help="check every line, send nothing")
    load.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    _connection_options(load)
    load.set_defaults(run=_import)
    for command in (demo, collector, send, load):  # -v after the command too
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    return parser


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", help="public API key (default: $KOALA_PUBLIC_API_KEY)")
    parser.add_argument("--base-url", help="default: $KOALA_BASE_URL, else Koala's API")
    parser.add_argument("--user-agent", default="koala-async-cli")


def _key(args: argparse.Namespace) -> str:
    key: str | None = args.key or os.environ.get("KOALA_PUBLIC_API_KEY")
    if not key:
        raise KoalaError("pass --key or set KOALA_PUBLIC_API_KEY to your workspace's public key")
    return key


def _color(text: str, code: str, stream: TextIO) -> str:
    return (
        f"\033[{code}m{text}\033[0m" if stream.isatty() and not os.environ.get("NO_COLOR") else text
    )


# send


async def _send(args: argparse.Namespace) -> int:
    kind = args.kind.replace("-", "_")
    kwargs: dict[str, Any] = {
        name: getattr(args, name)
        for name in KINDS[kind]
        if name not in ("properties", "traits") and getattr(args, name, None) is not None
    }
    if "event" in KINDS[kind]:
        kwargs["event"] = args.event
    elif args.event is not None:
        raise KoalaError(f"{args.kind} takes no event name; did you mean track?")
    if "properties" in KINDS[kind]:
        kwargs["properties"] = _pairs(args.prop, "--prop")
    if "traits" in KINDS[kind]:
        kwargs["traits"] = _pairs(args.trait, "--trait")
    if not args.verbose:
        logging.getLogger("koala_async").setLevel(logging.ERROR)  # we say what happened
    failures: list[DeliveryFailure] = []
    async with KoalaClient(
        _key(args),
        base_url=args.base_url,
        user_agent=args.user_agent,
        timeout=min(args.timeout, 10.0),
        retry=RetryPolicy(budget=args.timeout),
        shutdown_timeout=1.0,
        on_error=failures.append,
    ) as koala:
        message_id = await getattr(koala, kind)(**kwargs)
        try:
            await koala.flush(timeout=args.timeout)
        except DeliveryError as exc:
            print(f"koala-async: not delivered: {exc}", file=sys.stderr)
            return 1
    stats = koala.stats()
    if stats.delivered:
        suffix = f" (message_id {message_id})" if message_id else ""
        print(f"delivered: {args.kind}{suffix}")
        return 0
    reason = failures[0].reason if failures else "not delivered in time"
    detail = f": {stats.last_error}" if stats.last_error else ""
    print(
        f"koala-async: not delivered within {args.timeout:g}s ({reason}){detail}", file=sys.stderr
    )
    return 1


def _pairs(pairs: list[str], option: str) -> dict[str, Any]:
    """Parse KEY=VALUE options; values that are JSON (12, true, ["a"]) keep their type."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise KoalaError(f"{option} takes KEY=VALUE, got {pair!r}")
        try:
            result[key] = json.loads(value)
        except json.JSONDecodeError:
            result[key] = value
    return result


# collector


async def _collector(args: argparse.Namespace) -> int:
    fake = FakeCollector()
    out = args.jsonl.open("a", encoding="utf-8") if args.jsonl else None

    def handle(method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        reply = fake.handle(method, path, headers, raw)
        received = fake.requests[-1]
        print(_describe(received), flush=True)
        if out is not None:
            record = {
                "time": time.time(),
                "kind": received.kind,
                "key": redact(received.key),
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
    finally:
        if out is not None:
            out.close()
    return 0  # pragma: no cover - only a signal ends it


def _describe(received: Received) -> str:
    body = received.body
    who = ", ".join(
        f"{field}={body[field]}"
        for field in ("profile_id", "email", "domain", "account_id")
        if field in body
    )
    counts = " ".join(
        f"{kind}={len(body[kind])}"
        for kind in ("events", "identifies", "page_views")
        if isinstance(body.get(kind), list) and body[kind]
    )
    status = received.status or "reset"
    line = f"{time.strftime('%H:%M:%S')} {status} {received.kind:<7} {who} {counts}"
    for problem in received.violations:
        line += "\n  " + _color(f"spec violation: {problem}", "31", sys.stdout)
    return line


# import


class _Progress:
    """A progress line on stderr: a bar with rate and ETA on a terminal, a plain line each
    few seconds otherwise."""

    def __init__(self, total_bytes: int, stream: TextIO = sys.stderr) -> None:
        self.total = max(total_bytes, 1)
        self.stream = stream
        self.tty = stream.isatty()
        self.started = self.shown = time.monotonic()

    def update(self, lines: int, position: Callable[[], int], final: bool = False) -> None:
        """Show ``lines`` done, if a line is due; ``position()`` (bytes read) is asked then."""
        now = time.monotonic()
        if not final and now - self.shown < (0.2 if self.tty else 5.0):
            return
        self.shown = now
        elapsed = max(now - self.started, 1e-9)
        fraction = min(position() / self.total, 1.0)
        eta = elapsed / fraction - elapsed if fraction > 0 else math.inf
        rate = f"{lines / elapsed:,.0f} lines/s"
        eta_text = "" if final or math.isinf(eta) else f", ETA {eta:.0f}s"
        if self.tty:
            bar = "#" * int(fraction * 30)
            self.stream.write(f"\r[{bar:<30}] {fraction:6.1%} {lines:,} lines, {rate}{eta_text}  ")
            if final:
                self.stream.write("\n")
        else:
            self.stream.write(f"import: {lines:,} lines ({fraction:.0%}), {rate}{eta_text}\n")
        self.stream.flush()


def _read(args: argparse.Namespace, file: TextIO) -> Iterator[Call]:
    kind = args.format or ("csv" if args.file.suffix.lower() == ".csv" else "jsonl")
    if kind == "jsonl":
        return calls_from_jsonl(file, args.start_line)
    mapping = dict(pair.split("=", 1) for pair in args.map if "=" in pair)
    if len(mapping) != len(args.map):
        raise KoalaError("--map takes FIELD=COLUMN, e.g. --map email=user_email")
    return calls_from_csv(file, args.kind, mapping, args.start_line)


class _DeadLetters:
    """The dead-letter file: created at the first letter, only ever appended to, so that a
    resumed or repeated import never loses the letters of an earlier run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._file: TextIO | None = None

    def write(self, letter: dict[str, Any]) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps(letter, default=str) + "\n")
        self.count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclass
class _Tally:
    """Where an import stands: what it did with the lines, and the first line not taken."""

    next_line: int
    read: int = 0
    rejected: int = 0
    failed: int = 0
    delivered: int = 0
    stopped: str | None = None  # why reading ended before the end of the file

    def summary(self, dry_run: bool, dead: _DeadLetters) -> str:
        done = (
            f"checked {self.read - self.rejected:,}" if dry_run else f"delivered {self.delivered:,}"
        )
        text = f"read {self.read:,}, {done}, rejected {self.rejected:,}, failed {self.failed:,}"
        if dead.count:
            text += f"\n{dead.count:,} dead letters in {dead.path}: fix them, then import that file"
        if self.stopped:
            text += f"\n{self.stopped} Finish the file with --start-line {self.next_line}"
        return text


async def _cancel_on_ctrl_c(
    reading: anyio.CancelScope,
    draining: anyio.CancelScope,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Cancel ``reading`` at the first Ctrl-C, ``draining`` at the second; a third one
    interrupts as usual."""
    with anyio.open_signal_receiver(signal.SIGINT) as signals:
        task_status.started()
        await anext(signals)
        reading.cancel()
        print("\ninterrupted: delivering what is queued; Ctrl-C again to give up", file=sys.stderr)
        await anext(signals)
        draining.cancel()
        print("giving up: what is queued goes to the dead letters", file=sys.stderr)


async def _import(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise KoalaError(f"no such file: {args.file}")
    dead = _DeadLetters(args.dead_letter or args.file.with_name(args.file.name + ".dead.jsonl"))
    if dead.path.resolve() == args.file.resolve():
        raise KoalaError("--dead-letter must not be the file being imported")
    if dead.path.is_file() and dead.path.stat().st_size:
        print(
            f"note: {dead.path} holds earlier dead letters; new ones are appended", file=sys.stderr
        )
    tally = _Tally(next_line=args.start_line)

    def on_error(failure: DeliveryFailure) -> None:
        for letter in dead_letters(failure):
            tally.failed += 1
            dead.write(letter)

    koala = KoalaClient(
        "pk_dry_run" if args.dry_run else _key(args),
        base_url=args.base_url,
        user_agent=args.user_agent,
        enabled=not args.dry_run,
        on_full="block",  # backpressure: read no faster than Koala takes it
        max_queue_size=20_000,
        max_concurrent_requests=args.concurrency,
        shutdown_timeout=600,
        on_error=on_error,
    )
    reading, draining = anyio.CancelScope(), anyio.CancelScope()  # cancelled by Ctrl-C
    try:
        async with anyio.create_task_group() as watcher:
            if threading.current_thread() is threading.main_thread():  # where signals arrive
                await watcher.start(_cancel_on_ctrl_c, reading, draining)
            async with koala:
                with reading:
                    read_all = await _feed(args, koala, tally, dead)
                if reading.cancel_called:
                    tally.stopped = "Interrupted."
                with draining:
                    try:
                        await koala.flush(timeout=math.inf)
                    except DeliveryError as exc:  # on_error has the entries it refused
                        if not read_all and not tally.stopped:
                            tally.stopped = str(exc)
                if draining.cancel_called:
                    await koala.aclose(timeout=0)  # undelivered entries go to on_error
            tally.delivered = koala.stats().delivered
            watcher.cancel_scope.cancel()
    finally:
        dead.close()
    print(tally.summary(args.dry_run, dead))
    if reading.cancel_called:
        return 130
    return 1 if dead.count or tally.stopped else 0


async def _feed(
    args: argparse.Namespace, koala: KoalaClient, tally: _Tally, dead: _DeadLetters
) -> bool:
    """Hand every call of the file to ``koala``; invalid ones go to ``dead``. Return whether
    it read to the end: it stops early once Koala refuses the key for good, rather than copy
    the rest of the file into dead letters."""
    progress = _Progress(args.file.stat().st_size)
    with args.file.open(encoding="utf-8", newline="") as file:
        for call in _read(args, file):
            error = call.error
            if error is None:
                try:
                    await getattr(koala, call.kind)(**call.kwargs)  # waits while the queue is full
                except KoalaError as exc:
                    error = str(exc)
            tally.read += 1
            tally.next_line = call.line + 1
            if error is not None:
                tally.rejected += 1
                dead.write({"kind": call.kind, **call.kwargs, "_error": error, "_line": call.line})
            progress.update(tally.read, file.buffer.tell)
            if tally.read % 1024 == 0:
                await anyio.lowlevel.checkpoint()  # let a Ctrl-C in even when nothing waits
                dropped = koala.stats().dropped
                if dropped["unauthorized"] or dropped["suspended"]:
                    return False
        progress.update(tally.read, file.buffer.tell, final=True)
    return True


# demo


async def _demo(args: argparse.Namespace) -> int:
    import random
    import uuid

    fake = FakeCollector()
    sent: Counter[str] = Counter()
    rng = random.Random(7)
    pages = ["/", "/pricing", "/docs", "/blog/intent-data", "/signup"]
    async with fake.serve() as base_url:
        print(f"collector on {base_url}; sending traffic from {args.people} visitors…")
        async with KoalaClient(DEMO_KEY, base_url=base_url, user_agent="koala-async-demo") as koala:
            for n in range(args.people):
                ko_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                for path in rng.sample(pages, rng.randint(1, 4)):
                    await koala.page(
                        profile_id=ko_id, name=path, properties={"url": f"https://acme.dev{path}"}
                    )
                    sent["page_views"] += 1
                if n % 3 == 0:
                    email = f"visitor{n}@company{n % 7}.com"
                    await koala.identify(profile_id=ko_id, email=email, traits={"role": "eng"})
                    await koala.track(
                        "Signed Up", profile_id=ko_id, email=email, properties={"plan": "free"}
                    )
                    sent["identifies"] += 1
                    sent["events"] += 1
            for c in range(7):
                for group in ("development-team", "marketing-team"):
                    await koala.account_identify(
                        domain=f"company{c}.com",
                        group_id=group,
                        traits={"plan": "pro", "seats": 5 + c},
                    )
                    sent["account identifies"] += 1
                await koala.account_track("Workspace Created", domain=f"company{c}.com")
                sent["account events"] += 1
    got = Counter(
        {
            "page_views": len(fake.page_views),
            "identifies": len(fake.identifies),
            "events": len(fake.events),
            "account identifies": sum(e.type == "identify" for e in fake.accounts),
            "account events": sum(e.type == "track" for e in fake.accounts),
        }
    )
    print(
        f"the collector received {len(fake.requests)} requests for {len(fake.by_person())} people:"
    )
    for kind, count in sent.items():
        mark = "ok" if got[kind] == count else f"MISMATCH (sent {count})"
        print(f"  {kind:<20} {got[kind]:>5}  {mark}")
    print(f"  spec violations      {len(fake.violations):>5}")
    stats = koala.stats()
    print(
        f"the client: accepted {stats.accepted}, delivered {stats.delivered}, "
        f"dropped {stats.dropped_total}, in {stats.requests} requests ({stats.retries} retries)"
    )
    return 0 if got == sent and not fake.violations else 1
