"""``koala-async import FILE``: backfill calls from JSONL or CSV through a plain KoalaClient.

Four tasks run side by side while the client (its defaults, its own HTTP path) delivers:

- the reader hands each line to the client, waiting while its bounded queue is full
  (``on_full="block"``), so memory stays flat for any file;
- the checkpointer marks the line reading has reached, waits until the client has settled
  everything before it (``flush``) and the dead letters are written, then records the mark
  in the checkpoint file: ``--resume`` starts there after a crash or a kill;
- the watcher draws the progress line, and stops the import when Koala refuses the key for
  good, or when the endpoint has taken nothing ``--timeout`` seconds after it first failed;
- the Ctrl-C handler: a first Ctrl-C stops reading and delivers the queue, a second one
  gives up on it (the checkpoint says where to resume).

Once something was delivered, an outage is waited out however long it lasts: retries never
run out (only a batch Koala refuses is given up) and the circuit probes the endpoint every
:data:`_PROBE_EVERY` seconds at most, so the import resumes within seconds of its return.

Dead letters are the lines the client or Koala refused, byte for byte as in the file, so
the fixed file imports as it is; their line numbers and reasons go to a second file.
"""

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from .. import DeliveryError, DeliveryFailure, KoalaClient, KoalaError, RetryPolicy, Stats
from ..backfill import CALLS
from ._options import connection_options, endpoint, key, plural
from ._progress import Progress, Snapshot
from ._read import Source, csv_source, jsonl_source

__all__ = ["add_parser"]

_DEAD_SUFFIXES = (".dead.jsonl", ".dead.csv")
_SHOWN_IN_DRY_RUN = 20  # invalid lines a dry run prints before it only counts them
_CHECKPOINT_EVERY = 2.0  # seconds between checkpoints (each waits for what it covers)
_PROBE_EVERY = 2.0  # the longest wait between tries, and between probes of a down endpoint
# Retries never run out: an outage of any length is waited out. Only refusals are dropped.
_RETRY = RetryPolicy(max_attempts=sys.maxsize, budget=math.inf, max_backoff=_PROBE_EVERY)
# Drops that are no fault of the line: it was not sent, and a resumed import sends it.
_UNSENT = frozenset(("shutdown_timeout", "unauthorized", "gone", "queue_full", "closed"))
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
        "--dead-letter",
        type=Path,
        help="append refused lines here (default: FILE.dead.jsonl, or FILE.dead.csv); their "
        "line numbers and reasons go to DEAD_LETTER.reasons.jsonl",
    )
    load.add_argument(
        "--resume",
        action="store_true",
        help="start after the last line known delivered by an earlier, interrupted import",
    )
    load.add_argument(
        "--start-line",
        type=int,
        default=1,
        metavar="N",
        help="skip the lines (CSV: rows) before N",
    )
    load.add_argument("--dry-run", action="store_true", help="check every line, send nothing")
    load.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="most requests in flight (default: the client's, adaptive)",
    )
    load.add_argument(
        "--queue-size",
        type=int,
        default=100_000,
        metavar="N",
        help="entries the client may hold (default 100,000): memory, and how far a "
        "checkpoint may lag behind reading",
    )
    load.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="stop if the endpoint has taken nothing SECONDS after its first failure "
        "(default 30); later outages are waited out",
    )
    connection_options(load)
    load.set_defaults(run=_import)
    return load


class _DeadLetters:
    """The dead-letter file, the refused lines as they are in the source (a CSV's header
    first), and beside it ``<file>.reasons.jsonl``: one ``{"line", "dead_line", "error"}`` per
    letter (its line in the source, its line in the dead-letter file, why).

    Both are created at the first letter and only ever appended to (a resumed or repeated
    import never loses the letters of an earlier run).
    """

    def __init__(self, path: Path, header: bytes = b"") -> None:
        self.path = path
        self.reasons = path.with_name(path.name + ".reasons.jsonl")
        self.header = header
        self.count = 0
        self._file: BinaryIO | None = None
        self._why: Any = None
        self._lines = 0  # lines in the dead-letter file

    def write(self, line: int, raw: bytes, error: str) -> None:
        if self._file is None:
            if self.path.is_file():
                with self.path.open("rb") as old:
                    self._lines = sum(1 for _ in old)
            self._file = self.path.open("ab")
            self._why = self.reasons.open("a", encoding="utf-8")
            if not self._lines and self.header:
                self._file.write(self.header)
                self._lines = 1
        self._file.write(raw if raw.endswith(b"\n") else raw + b"\n")
        self._lines += 1
        self._why.write(json.dumps({"line": line, "dead_line": self._lines, "error": error}))
        self._why.write("\n")
        self.count += 1

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._why.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._why.close()


class _Checkpoint:
    """``FILE.checkpoint``: the first line not known settled (delivered, or a dead letter),
    and where it starts in the file, with the file's size and mtime to tell it is the same
    file. Replaced atomically, so a kill at any moment leaves the old one or the new one."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.path = source.with_name(source.name + ".checkpoint")
        stat = source.stat()
        self._stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        self.line = 1

    def load(self) -> tuple[int, int] | None:
        """The (line, offset) an earlier import reached, or None if there is none."""
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if {k: saved.get(k) for k in self._stamp} != self._stamp:
            raise KoalaError(
                f"{self.source} changed since the checkpoint {self.path} was written; "
                "import it whole (message ids make repeats harmless) or pass --start-line"
            )
        return int(saved["line"]), int(saved["offset"])

    def save(self, line: int, offset: int) -> None:
        self.line = line
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps({"line": line, "offset": offset, **self._stamp}))
        os.replace(temporary, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class _Lines:
    """The lines handed to the client and not yet covered by a checkpoint, by message_id:
    a failure names its entries by message_id, and its dead letters are their lines.

    Each line is one int, its number, offset and length packed (:meth:`pack`), and is read
    again from the file when it fails: the bytes of every line in flight would cost more
    memory than the client's queue. Kept in generations, one per checkpoint: once a
    checkpoint's flush has settled its lines, their generation is forgotten.
    """

    def __init__(self, path: Path) -> None:
        self.current: dict[str, int] = {}
        self._older: list[dict[str, int]] = []
        self._path = path
        self._file: BinaryIO | None = None

    @staticmethod
    def pack(number: int, offset: int, length: int) -> int:
        return (number << 80) | (offset << 32) | length

    def cut(self) -> dict[str, int]:
        """Start a new generation; return the one just ended."""
        ended, self.current = self.current, {}
        self._older.append(ended)
        return ended

    def forget(self, generation: dict[str, int]) -> None:
        """Drop ``generation`` and every older one: they are settled."""
        for i, older in enumerate(self._older):
            if older is generation:
                del self._older[: i + 1]
                return

    def pop(self, message_id: object) -> tuple[int, bytes] | None:
        """The number and bytes of the line that gave ``message_id``, if it is known."""
        if not isinstance(message_id, str):
            return None
        for generation in (self.current, *reversed(self._older)):
            packed = generation.pop(message_id, None)
            if packed is not None:
                if self._file is None:
                    self._file = self._path.open("rb")
                self._file.seek((packed >> 32) & (1 << 48) - 1)
                return packed >> 80, self._file.read(packed & (1 << 32) - 1)
        return None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclass
class _Tally:
    """Where an import stands: what it did with the lines, and the first line not read."""

    next_line: int
    offset: int
    read: int = 0
    rejected: int = 0  # invalid lines, refused at the call
    failed: int = 0  # lines Koala refused
    unsent: int = 0  # lines given up unsent (a resumed import sends them)
    heard: int = 0  # entries on_error heard of
    delivered: int = 0
    stopped: str | None = None  # why reading ended before the end of the file

    def summary(self, dry_run: bool, dead: _DeadLetters, resume_at: int) -> str:
        done = (
            f"checked {self.read - self.rejected:,}" if dry_run else f"delivered {self.delivered:,}"
        )
        text = f"read {self.read:,}, {done}, rejected {self.rejected:,}, failed {self.failed:,}"
        if self.unsent:
            text += f", not sent {self.unsent:,}"
        if dead.count:
            text += f"\n{plural(dead.count, 'dead letter')} in {dead.path} (reasons in "
            text += f"{dead.reasons}): fix them, then import that file"
        if self.stopped:
            text += f"\n{self.stopped} Finish the file with --resume (or --start-line {resume_at})"
        return text


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
        draining.cancel()
        print("giving up: what is not delivered is sent by --resume", file=sys.stderr)


def _dead_letter_path(args: argparse.Namespace, csv: bool) -> Path:
    if args.dead_letter is not None:
        return Path(args.dead_letter)
    file = Path(args.file)
    return file.with_name(file.name + (".dead.csv" if csv else ".dead.jsonl"))


async def _import(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise KoalaError(f"no such file: {args.file}")
    csv = (args.format or ("csv" if args.file.suffix.lower() == ".csv" else "jsonl")) == "csv"
    if not csv and (args.map or args.kind):
        raise KoalaError("--map and --kind are for CSV files; a JSONL line names its kind")
    dead_path = _dead_letter_path(args, csv)
    if dead_path.resolve() == args.file.resolve():
        raise KoalaError("--dead-letter must not be the file being imported")
    public_key = "pk_dry_run" if args.dry_run else key(args)
    checkpoint = _Checkpoint(args.file)
    start, offset = args.start_line, 0
    saved = checkpoint.load()
    if args.resume:
        if saved is None:
            raise KoalaError(f"--resume: no checkpoint {checkpoint.path}; nothing to resume")
        start, offset = saved
        print(f"resuming at line {start:,}", file=sys.stderr)
    elif saved is not None and not args.dry_run:
        print(
            f"note: an earlier import stopped at line {saved[0]:,}; --resume continues there",
            file=sys.stderr,
        )
    with args.file.open("rb") as file:
        if offset and not csv:
            file.seek(offset)
        source = (
            csv_source(file, args.kind, args.map, start, offset)
            if csv
            else jsonl_source(file, start, offset)
        )
        dead = _DeadLetters(dead_path, source.header)
        if not args.dry_run and dead.path.is_file() and dead.path.stat().st_size:
            print(
                f"note: {dead.path} holds earlier dead letters; new ones are appended",
                file=sys.stderr,
            )
        tally = _Tally(next_line=start, offset=source.offset)
        if not args.dry_run:
            checkpoint.save(start, source.offset)
        try:
            read_all = await _run(args, public_key, source, tally, dead, checkpoint)
        finally:
            dead.close()
    print(tally.summary(args.dry_run, dead, checkpoint.line))
    clean = read_all and not (tally.rejected or tally.failed or tally.unsent or tally.stopped)
    if clean and not args.dry_run and args.file.name.endswith(_DEAD_SUFFIXES):
        args.file.unlink()  # its letters are all delivered: a later import must not warn of it
        args.file.with_name(args.file.name + ".reasons.jsonl").unlink(missing_ok=True)
        print(f"every letter of {args.file} is delivered: removed it")
    if tally.stopped == "Interrupted.":
        return 130
    return 0 if clean else 1


async def _run(
    args: argparse.Namespace,
    public_key: str,
    source: Source,
    tally: _Tally,
    dead: _DeadLetters,
    checkpoint: _Checkpoint,
) -> bool:
    """Feed ``source`` to a client and deliver it; return whether it read to the end."""
    lines = _Lines(args.file)

    def on_error(failure: DeliveryFailure) -> None:
        tally.heard += len(failure.entries)
        unsent = failure.reason in _UNSENT
        for entry in failure.entries:
            found = lines.pop(entry.get("message_id"))
            if unsent:
                tally.unsent += 1
                continue
            tally.failed += 1
            if found is None:  # two lines with one message_id: the line is not known
                logger.error("a line Koala refused (%s) is not known to the import", failure)
                continue
            dead.write(*found, _reason(failure))

    koala = KoalaClient(
        public_key,
        base_url=args.base_url,
        user_agent=args.user_agent,
        enabled=not args.dry_run,
        on_full="block",  # backpressure: read no faster than Koala takes it
        max_queue_size=args.queue_size,
        timeout=min(args.timeout, 10.0),
        retry=_RETRY,
        shutdown_timeout=600,
        on_error=on_error,
        strict=True,  # a bad line raises at its call, so it becomes a dead letter at once
        **({} if args.concurrency is None else {"max_concurrent_requests": args.concurrency}),
    )
    reading, draining, marking = anyio.CancelScope(), anyio.CancelScope(), anyio.CancelScope()
    size = max(args.file.stat().st_size, 1)
    progress = Progress()

    def snapshot(stats: Stats) -> Snapshot:
        settled = tally.rejected + stats.delivered + stats.dropped_total
        if args.dry_run:
            settled = tally.read
        return Snapshot(tally.read, source.offset / size, settled, stats.last_error)

    def stop(why: str) -> None:
        tally.stopped = tally.stopped or why
        reading.cancel()
        draining.cancel()

    async def heard_all() -> bool:
        """Wait (a few seconds at most) until on_error has heard of every drop so far."""
        for _ in range(500):
            stats = koala.stats()
            told = stats.dropped_total - sum(stats.dropped[r] for r in ("invalid", "filtered"))
            if tally.heard >= told:
                return True
            await anyio.sleep(0.01)
        return False

    async def mark() -> None:
        """Checkpoint: once what was read before the mark is settled, record the mark."""
        while True:
            await anyio.sleep(_CHECKPOINT_EVERY)
            line, offset = tally.next_line, tally.offset
            generation = lines.cut()
            try:
                await koala.flush(timeout=math.inf)
            except DeliveryError:  # the key is refused: the watcher stops the import
                return
            if not await heard_all() or tally.unsent:
                continue  # something was given up unsent: the mark would skip it
            dead.flush()
            lines.forget(generation)
            checkpoint.save(line, offset)

    async def watch() -> None:
        """Draw progress; stop when the key is refused, or nothing ever gets through."""
        down_since: float | None = None
        while True:
            await anyio.sleep(0.1)
            dead.flush()
            stats = koala.stats()
            if progress.due():
                progress.show(snapshot(stats))
            if stats.circuit == "dead":
                stop(f"Stopped: {stats.last_error}.")
                return
            if stats.delivered or args.dry_run or stats.circuit != "open":
                down_since = None
                continue
            now = time.monotonic()
            down_since = down_since or now
            if now - down_since >= args.timeout:
                cause = f"nothing was delivered to {endpoint(args, public_key)}"
                stop(f"Stopped: {cause} within {args.timeout:g}s: {stats.last_error}.")
                return

    read_all = False
    async with anyio.create_task_group() as tasks:
        if threading.current_thread() is threading.main_thread():  # where signals arrive
            await tasks.start(_on_ctrl_c, reading, draining, tally)
        async with koala:
            tasks.start_soon(watch)
            if not args.dry_run:
                tasks.start_soon(_in, marking, mark)
            with reading:
                read_all = await _feed(args, koala, source, tally, lines, dead)
            with draining:
                try:
                    await koala.flush(timeout=math.inf)
                except DeliveryError as exc:  # the key is refused: what is queued is unsent
                    tally.stopped = tally.stopped or f"Stopped: {exc}."
            marking.cancel()
            if draining.cancel_called:
                await koala.aclose(timeout=0)  # the rest is unsent: --resume sends it
        await heard_all()
        stats = koala.stats()
        tally.delivered = stats.delivered
        if not args.dry_run:
            _last_checkpoint(checkpoint, tally, stats, read_all, dead)
        progress.show(snapshot(stats), final=True)
        lines.close()
        tasks.cancel_scope.cancel()
    return read_all


async def _in(scope: anyio.CancelScope, task: Any) -> None:
    with scope:
        await task()


def _last_checkpoint(
    checkpoint: _Checkpoint, tally: _Tally, stats: Stats, read_all: bool, dead: _DeadLetters
) -> None:
    """Everything read is settled: the file is done (no checkpoint), or the checkpoint moves to
    the first line not read. Otherwise it stays where the last settled mark put it."""
    if tally.unsent or stats.pending:
        return
    dead.flush()
    if read_all:
        checkpoint.remove()
        checkpoint.line = tally.next_line
    else:
        checkpoint.save(tally.next_line, tally.offset)


def _reason(failure: DeliveryFailure) -> str:
    reason: str = failure.reason
    if failure.status is not None:
        return f"{reason} (HTTP {failure.status})"
    if failure.exception is not None:
        return f"{reason} ({type(failure.exception).__name__}: {failure.exception})"
    return reason


async def _feed(
    args: argparse.Namespace,
    koala: KoalaClient,
    source: Source,
    tally: _Tally,
    lines: _Lines,
    dead: _DeadLetters,
) -> bool:
    """Hand every line to ``koala``; invalid ones go to ``dead`` (a dry run prints them).
    Return whether it read to the end."""
    calls = {name: getattr(koala, name) for name in CALLS}
    pack = lines.pack
    for read, (number, raw, kind, kwargs, error) in enumerate(source, 1):
        if error is None:
            try:
                await calls[kind](**kwargs)  # waits while the queue is full
            except KoalaError as exc:
                error = str(exc)
            else:
                end = source.offset
                lines.current[kwargs["message_id"]] = pack(number, end - len(raw), len(raw))
        tally.read = read
        tally.next_line = number + 1
        tally.offset = source.offset
        if error is not None:
            tally.rejected += 1
            if not args.dry_run:
                dead.write(number, raw, error)
            elif tally.rejected <= _SHOWN_IN_DRY_RUN:
                print(f"line {number}: {error}", file=sys.stderr)
        if not read & 1023:
            await anyio.lowlevel.checkpoint()  # let the watcher and Ctrl-C in
    return True
