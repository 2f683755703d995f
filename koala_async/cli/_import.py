"""``koala-async import FILE``: backfill calls from JSONL or CSV.

Three tasks run side by side while the client delivers:

- the reader hands each line to the client, waiting while its bounded queue is full, so
  memory stays flat for any file;
- the watcher looks at the client's counters a few times a second: it draws the progress
  line, and stops the reader when Koala refuses the key for good, or when the endpoint is
  down and has taken nothing yet (fail fast: dead-letter what was read, name the cause);
- the Ctrl-C handler: a first Ctrl-C stops reading and delivers the queue, a second one
  gives up on it.

Giving up never cancels a request in flight: the server may already have taken it, and its
entries would become dead letters that a re-import sends twice. The gate (``_Gate``) stops
new requests and waits for the ones in flight; only what is left becomes dead letters.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
import anyio.lowlevel
import httpx
from anyio.abc import TaskStatus

from .._calls import CALLS
from .._client import KoalaClient
from .._exceptions import DeliveryError, KoalaError
from .._retry import RetryPolicy
from .._stats import DeliveryFailure
from .._transport import Http11Transport
from ._options import connection_options, endpoint, key, plural
from ._progress import Progress, Snapshot
from ._read import Call, calls_from_csv, calls_from_jsonl, dead_letters

__all__ = ["add_parser"]

_DEAD_SUFFIX = ".dead.jsonl"
_SHOWN_IN_DRY_RUN = 20  # invalid lines a dry run prints before it only counts them
logger = logging.getLogger("koala_async")


def add_parser(commands: Any) -> argparse.ArgumentParser:
    load: argparse.ArgumentParser = commands.add_parser(
        "import", help="backfill calls from a JSONL or CSV file"
    )
    load.add_argument("file", type=Path)
    load.add_argument("--format", choices=["jsonl", "csv"], help="default: from the file name")
    load.add_argument("--kind", choices=list(CALLS), help="CSV: the call every row makes")
    load.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN[:TYPE]",
        help="CSV: fill a call argument (or properties.X / traits.X) from a column; TYPE is "
        "str (default), int, float, bool or json",
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
    load.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up on a batch after SECONDS of retries, and on an endpoint that has taken "
        "nothing SECONDS after its first error (default 30)",
    )
    connection_options(load)
    load.set_defaults(run=_import)
    return load


class _DeadLetters:
    """The dead-letter file: created at the first letter, only ever appended to (a resumed or
    repeated import never loses the letters of an earlier run), and flushed by
    :meth:`flush` a few times a second, so it shows failures as they happen."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._file: TextIO | None = None

    def write(self, letter: dict[str, Any]) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps(letter, default=str) + "\n")
        self.count += 1

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

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
    gave_up: str | None = None  # why what was queued went to the dead letters

    def summary(self, dry_run: bool, dead: _DeadLetters) -> str:
        done = (
            f"checked {self.read - self.rejected:,}" if dry_run else f"delivered {self.delivered:,}"
        )
        text = f"read {self.read:,}, {done}, rejected {self.rejected:,}, failed {self.failed:,}"
        if dead.count:
            text += f"\n{plural(dead.count, 'dead letter')} in {dead.path}: fix them, then import"
            text += " that file"
        if self.stopped:
            text += f"\n{self.stopped} Finish the file with --start-line {self.next_line}"
        return text


class _Gate(httpx.AsyncBaseTransport):
    """The import's transport: counts requests in flight and, once closed, refuses new ones,
    so that giving up can wait for the requests in flight instead of cancelling them.

    Each request borrows one of ``size`` single-connection transports, the lean HTTP/1.1
    transport the client gives each of its senders (httpx's pool costs over twice the CPU
    per request); the client never has more than ``size`` requests in flight.
    """

    def __init__(self, size: int) -> None:
        self._idle_transports = [Http11Transport(httpx.create_ssl_context()) for _ in range(size)]
        self._all = list(self._idle_transports)
        self.closed = False
        self.in_flight = 0
        self._idle: anyio.Event | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.closed:
            raise httpx.ConnectError("the import gave up; request not sent", request=request)
        transport = self._idle_transports.pop()
        self.in_flight += 1
        try:
            response = await transport.handle_async_request(request)
            await response.aread()  # in flight until the server has answered in full
            return response
        finally:
            self._idle_transports.append(transport)
            self.in_flight -= 1
            if not self.in_flight and self._idle is not None:
                self._idle.set()

    async def wait_idle(self) -> None:
        while self.in_flight:
            self._idle = anyio.Event()
            await self._idle.wait()

    async def aclose(self) -> None:
        for transport in self._all:
            await transport.aclose()


async def _on_ctrl_c(
    reading: anyio.CancelScope,
    draining: anyio.CancelScope,
    tally: _Tally,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Stop reading at the first Ctrl-C, give up at the second; a third one interrupts."""
    with anyio.open_signal_receiver(signal.SIGINT) as signals:
        task_status.started()
        await anext(signals)
        reading.cancel()
        tally.stopped = tally.stopped or "Interrupted."
        print("\ninterrupted: delivering what is queued; Ctrl-C again to give up", file=sys.stderr)
        await anext(signals)
        tally.gave_up = "interrupted before it was sent"
        draining.cancel()
        print(
            "giving up: waiting for the requests in flight; the rest goes to the dead letters",
            file=sys.stderr,
        )


async def _import(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise KoalaError(f"no such file: {args.file}")
    dead = _DeadLetters(args.dead_letter or args.file.with_name(args.file.name + _DEAD_SUFFIX))
    if dead.path.resolve() == args.file.resolve():
        raise KoalaError("--dead-letter must not be the file being imported")
    public_key = "pk_dry_run" if args.dry_run else key(args)
    with args.file.open(encoding="utf-8", newline="") as file:
        calls = _read(args, file)
        if not args.dry_run and dead.path.is_file() and dead.path.stat().st_size:
            print(
                f"note: {dead.path} holds earlier dead letters; new ones are appended",
                file=sys.stderr,
            )
        tally = _Tally(next_line=args.start_line)
        try:
            read_all = await _run(args, public_key, calls, file, tally, dead)
        finally:
            dead.close()
    print(tally.summary(args.dry_run, dead))
    clean = read_all and not (tally.rejected or tally.failed or tally.stopped)
    if clean and not args.dry_run and args.file.name.endswith(_DEAD_SUFFIX):
        args.file.unlink()  # its letters are all delivered: a later import must not warn of it
        print(f"every letter of {args.file} is delivered: removed it")
    if tally.stopped == "Interrupted.":
        return 130
    return 0 if clean else 1


async def _run(
    args: argparse.Namespace,
    public_key: str,
    calls: Iterator[Call],
    file: TextIO,
    tally: _Tally,
    dead: _DeadLetters,
) -> bool:
    """Feed ``calls`` to a client and deliver them; return whether it read to the end."""

    failures: list[DeliveryFailure] = []

    def on_error(failure: DeliveryFailure) -> None:
        # Only keep it: at shutdown the client gives on_error a second to hear of every
        # drop, too little to write thousands of letters on a busy machine.
        failures.append(failure)

    def write_letters() -> None:
        for failure in failures:
            error = tally.gave_up if failure.reason == "shutdown_timeout" else None
            for letter in dead_letters(failure, error):
                tally.failed += 1
                dead.write(letter)
        failures.clear()
        dead.flush()

    request_timeout = min(args.timeout, 10.0)
    gate = _Gate(args.concurrency)
    # With proxies in the environment, httpx routes through its own proxy transports instead,
    # which the gate does not see: giving up then cancels what is in flight.
    http = httpx.AsyncClient(transport=gate, timeout=request_timeout)
    koala = KoalaClient(
        public_key,
        base_url=args.base_url,
        user_agent=args.user_agent,
        enabled=not args.dry_run,
        on_full="block",  # backpressure: read no faster than Koala takes it
        max_queue_size=20_000,
        max_concurrent_requests=args.concurrency,
        http_client=http,
        timeout=request_timeout,
        retry=RetryPolicy(budget=args.timeout),
        shutdown_timeout=600,
        on_error=on_error,
        strict=True,  # a bad line raises at its call, so it becomes a dead letter at once
    )
    reading, draining = anyio.CancelScope(), anyio.CancelScope()
    size = max(args.file.stat().st_size, 1)
    progress = Progress()

    def snapshot() -> Snapshot:
        stats = koala.stats()
        settled = tally.rejected + stats.delivered + stats.dropped_total
        fraction = file.buffer.tell() / size if not file.closed else 1.0
        if args.dry_run:
            settled = tally.read
        return Snapshot(tally.read, fraction, settled, stats.last_error)

    async def watch() -> None:
        """Draw progress; stop reading, or give up, when the endpoint says so."""
        opened: float | None = None  # when the circuit was first seen open
        while True:
            await anyio.sleep(0.1)
            write_letters()
            if progress.due():
                progress.show(snapshot())
            stats = koala.stats()
            if stats.circuit == "dead":
                reading.cancel()  # the key is refused for good: the queue drops at once
            if stats.delivered or args.dry_run or stats.last_error is None:
                continue
            # Down from the start: open for longer than a refusal takes to be confirmed (or
            # than one probe), with nothing delivered. Stop reading and say why.
            opened = opened or time.monotonic() if stats.circuit == "open" else None
            if stats.circuit == "dead" or (opened and time.monotonic() - opened >= 2.0):
                cause = f"nothing was delivered to {endpoint(args, public_key)}: {stats.last_error}"
                tally.stopped = tally.stopped or f"Stopped: {cause}."
                tally.gave_up = tally.gave_up or cause
                reading.cancel()
                draining.cancel()
                return

    async with http, anyio.create_task_group() as tasks:
        if threading.current_thread() is threading.main_thread():  # where signals arrive
            await tasks.start(_on_ctrl_c, reading, draining, tally)
        async with koala:
            tasks.start_soon(watch)
            read_all = False
            with reading:
                read_all = await _feed(args, koala, calls, tally, dead)
            with draining:
                try:
                    await koala.flush(timeout=math.inf)
                except DeliveryError as exc:  # on_error has the entries it refused
                    if not read_all:
                        tally.stopped = tally.stopped or str(exc)
            if draining.cancel_called:
                gate.closed = True  # nothing new leaves; what is in flight may finish
                with anyio.move_on_after(request_timeout + 1):
                    await gate.wait_idle()
                await anyio.sleep(0.05)  # let the senders count the answers they just got
                await koala.aclose(timeout=0)  # the rest goes to on_error, as dead letters
        write_letters()
        tally.delivered = koala.stats().delivered
        progress.show(snapshot(), final=True)
        tasks.cancel_scope.cancel()
    return read_all


def _read(args: argparse.Namespace, file: TextIO) -> Iterator[Call]:
    """The file's calls; a CSV's header and ``--map`` options are checked at once."""
    kind = args.format or ("csv" if args.file.suffix.lower() == ".csv" else "jsonl")
    if kind == "jsonl":
        if args.map or args.kind:
            raise KoalaError("--map and --kind are for CSV files; a JSONL line names its kind")
        return calls_from_jsonl(file, args.start_line)
    return calls_from_csv(file, args.kind, args.map, args.start_line)


async def _feed(
    args: argparse.Namespace,
    koala: KoalaClient,
    calls: Iterator[Call],
    tally: _Tally,
    dead: _DeadLetters,
) -> bool:
    """Hand every call to ``koala``; invalid ones go to ``dead`` (a dry run prints them).
    Return whether it read to the end."""
    for call in calls:
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
            if not args.dry_run:
                dead.write({"kind": call.kind, **call.kwargs, "_error": error, "_line": call.line})
            elif tally.rejected <= _SHOWN_IN_DRY_RUN:
                print(f"line {call.line}: {error}", file=sys.stderr)
        if tally.read % 1024 == 0:
            await anyio.lowlevel.checkpoint()  # let the watcher and Ctrl-C in
    return True
