"""The durable spool (opt-in): accepted entries kept in SQLite until Koala took them.

Store, then send, then delete. A call never touches the disk: :class:`SpooledQueue` numbers
each entry it queues (its *seq*, the order entries were made in) and appends a row to an
in-memory list; :meth:`Spool.run`, a background task, writes those rows every
``commit_interval`` in one transaction, in a worker thread, together with the deletions of
the entries settled since (delivered, or refused for good). A row whose deletion arrives
before it was written is never written.

A row is *resident* (its entry is also in memory, in a batch) or *parked* (on disk only).
Entries are parked when memory is full (the call writes them to disk only), when a batch
runs out of retries (it and the person's later batches go back to disk, keeping their
order), at shutdown (what the deadline leaves), and at open (what an earlier run left).
While anything is parked, new entries are parked too, and the writer reads parked rows back
into memory in seq order as room appears: so each person's entries are sent in the order
they were made, and memory holds at most ``max_queue_size`` entries.

The database work is in :class:`SpoolFile` (plain blocking methods, run in a worker thread,
one at a time); :class:`Spool` is the event loop's side of it.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import anyio
import anyio.to_thread

from ._exceptions import SpoolError, ValidationError
from ._ledger import Ledger
from ._queue import Batch, Queue, Target
from ._reporter import Reporter
from ._stats import DropReason
from ._validate import Who

__all__ = ["Spool", "SpoolFile", "SpoolOptions", "SpooledQueue", "inspect"]

logger = logging.getLogger("koala_async")

APPLICATION_ID = 0x4B6F5370  # "KoSp", in the database header: the file is a koala-async spool
VERSION = 1  # the schema's version, in the header's user_version
FIELDS = ("profile_id", "email", "domain", "account_id")
SECONDARY = ("email", "email", "account_id", "account_id")
_CODES = {field: code for code, field in enumerate(FIELDS)}
_CHUNK = 5000  # rows read back into memory at once
# Outcomes that leave the entries on disk: a later try, or a later run, may deliver them. A
# dead endpoint is one: a wrong key or URL on one deploy must not empty the spool.
_KEEP: frozenset[DropReason | None] = frozenset(
    ("retries_exhausted", "shutdown_timeout", "unauthorized", "gone")
)

_SCHEMA = """
CREATE TABLE entries (
    seq INTEGER PRIMARY KEY,  -- the order the entries were made in
    target INTEGER NOT NULL,  -- queued by: 0 profile_id, 1 email, 2 domain, 3 account_id
    key TEXT NOT NULL,
    secondary TEXT,  -- the other id field's value (email, account_id), if any
    kind INTEGER NOT NULL,  -- 0 events, 1 identifies, 2 page_views
    raw BLOB NOT NULL,  -- the encoded entry, its message_id and sent_at included
    created REAL NOT NULL,  -- time.time() when it was accepted
    parked INTEGER NOT NULL,  -- 1: on disk only; 0: also in a batch in memory
    ip TEXT  -- the visitor's ip, sent top-level with a person's entries, if any
);
CREATE INDEX parked_seq ON entries(seq) WHERE parked = 1;
"""
_COLUMNS = ["seq", "target", "key", "secondary", "kind", "raw", "created", "parked", "ip"]
_ROWS = 200  # rows per INSERT statement (1,800 parameters, under SQLite's limit of 32,766)


def _insert(rows: int) -> str:
    return "INSERT INTO entries VALUES " + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)


_INSERT_MANY = _insert(_ROWS)

Row = tuple[int, int, str, "str | None", int, bytes, float, int, "str | None"]
Loaded = tuple[int, int, str, "str | None", int, bytes, "str | None"]


@dataclass(frozen=True)
class SpoolOptions:
    """The spool's checked options."""

    path: str
    commit_interval: float
    max_bytes: int
    max_age: float

    @classmethod
    def build(
        cls, path: object, commit_interval: object, max_bytes: object, max_age: object
    ) -> SpoolOptions:
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise ValidationError(f"spool must be a file path, got {path!r}")
        for name, value, top in (
            ("spool_commit_interval", commit_interval, 5.0),
            ("spool_max_age", max_age, math.inf),
        ):
            if type(value) not in (int, float) or not 0 < value <= top:  # type: ignore[operator]
                raise ValidationError(
                    f"{name} must be a number of seconds greater than 0"
                    + (f" and at most {top:g}" if top < math.inf else "")
                    + f", got {value!r}"
                )
        if type(max_bytes) is not int or max_bytes < 65536:
            raise ValidationError(
                f"spool_max_bytes must be an int of at least 65536, got {max_bytes!r}"
            )
        assert isinstance(commit_interval, (int, float))
        assert isinstance(max_age, (int, float))
        return cls(str(os.fspath(path)), float(commit_interval), max_bytes, float(max_age))


def _refuse(path: str, why: str) -> SpoolError:
    return SpoolError(
        f"{path} is not a koala-async spool that can be read ({why}); it was left untouched: "
        "move it aside, or pass another spool path"
    )


def _lock(path: str) -> int:
    """Take the spool's lock (a sidecar file holding the owner's pid) or say who holds it.
    The OS releases it when the owner's process ends, however it ends."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        raise SpoolError("the spool needs a POSIX system (fcntl.flock)") from None
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise SpoolError(
            f"the spool {path} is in use by process {owner} (a KoalaClient, or `koala-async "
            "spool --send`); two owners would send everything twice. Give each process its own "
            "spool file, e.g. with the worker's index in the path"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _connect(path: str, readonly: bool = False) -> sqlite3.Connection:
    """Open ``path`` and check it is one of ours, or create it; refuse anything else."""
    try:
        with open(path, "rb") as file:
            header = file.read(16)
    except FileNotFoundError:
        if readonly:
            raise SpoolError(f"there is no spool at {path}") from None
        header = b""
    except OSError as exc:
        raise SpoolError(f"cannot read the spool {path}: {exc}") from None
    if header and header != b"SQLite format 3\x00":
        raise _refuse(path, "it is not an SQLite database")
    uri = f"file:{path}?mode=ro" if readonly else path
    try:
        db = sqlite3.connect(uri, uri=readonly, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot open the spool {path}: {exc}") from None
    try:
        _check(db, path, readonly)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise _refuse(path, str(exc)) from None
    except BaseException:
        db.close()
        raise
    return db


_HEADER = ("application_id", "user_version")


def _check(db: sqlite3.Connection, path: str, readonly: bool) -> None:
    """Create the schema in a new file; refuse a file that is not a spool we can read."""
    app, version = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in _HEADER)
    tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if app == 0 and tables == 0 and not readonly:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(
            f"BEGIN; {_SCHEMA} PRAGMA application_id={APPLICATION_ID}; "
            f"PRAGMA user_version={VERSION}; COMMIT;"
        )
    elif app != APPLICATION_ID:
        raise _refuse(path, f"another program's SQLite database (application_id {app})")
    elif version != VERSION:
        raise _refuse(path, f"schema version {version}, this koala-async reads {VERSION}")
    else:
        columns = [row[1] for row in db.execute("PRAGMA table_info(entries)")]
        if columns != _COLUMNS:
            raise _refuse(path, "its table is not the spool's")
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise _refuse(path, f"corrupt: {check}")
    if not readonly:
        db.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL: a commit survives the process being killed; only a
        # power loss may undo the last commits (never corrupt the file).
        db.execute("PRAGMA synchronous=NORMAL")


class SpoolFile:
    """The spool's database and lock. Blocking methods: call them from a worker thread."""

    def __init__(self, path: str, db: sqlite3.Connection, lock: int) -> None:
        self.path = path
        self._db = db
        self._lock = lock
        self.rows = 0  # rows in the table
        self.last_seq = 0

    @classmethod
    def open(cls, path: str) -> tuple[SpoolFile, int]:
        """Lock, check (or create) and open the spool; park every row an earlier run left.
        Returns the file and how many entries it holds.

        Raises:
            SpoolError: another live process owns it, or it is not a readable spool.
        """
        lock = _lock(path)
        try:
            db = _connect(path)
        except BaseException:
            os.close(lock)
            raise
        spool = cls(path, db, lock)
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE entries SET parked = 1 WHERE parked = 0")
        count, last = db.execute("SELECT count(*), coalesce(max(seq), 0) FROM entries").fetchone()
        db.execute("COMMIT")
        spool.rows, spool.last_seq = count, last
        return spool, count

    def commit(
        self, writes: list[Row], deletes: list[int], parks: list[int], max_bytes: int, cutoff: float
    ) -> tuple[int, int]:
        """Write, park and delete in one transaction, then apply the caps to parked rows:
        return how many were dropped past ``max_bytes`` and how many were older than
        ``cutoff``."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if deletes:
                gone = set(deletes)
                writes = [row for row in writes if row[0] not in gone]
            if writes:
                self._insert(writes)
            if parks:
                self._each("UPDATE entries SET parked = 1 WHERE seq IN ", parks)
            if deletes:
                self.rows -= self._each("DELETE FROM entries WHERE seq IN ", deletes)
            expired = self._expire(cutoff)
            full = self._cap(max_bytes)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return full, expired

    def _insert(self, writes: list[Row]) -> None:
        """Insert rows, _ROWS to a statement: sqlite3 lets go of the GIL for each statement
        it runs and takes it back after, and a handoff per row would slow the event loop's
        thread (it measured 2x on the calls) more than binding the parameters does."""
        db = self._db
        whole, rest = divmod(len(writes), _ROWS)
        flat = list(chain.from_iterable(writes))
        width = _ROWS * len(_COLUMNS)
        if whole:
            db.executemany(_INSERT_MANY, (flat[i * width : (i + 1) * width] for i in range(whole)))
        if rest:
            db.execute(_insert(rest), flat[whole * width :])
        self.rows += len(writes)

    def _each(self, statement: str, seqs: list[int]) -> int:
        """Run ``statement (?, ?, ...)`` for every seq, _ROWS at a time; return the rows changed."""
        changed = 0
        for start in range(0, len(seqs), _ROWS):
            chunk = seqs[start : start + _ROWS]
            marks = ",".join("?" * len(chunk))
            changed += self._db.execute(f"{statement}({marks})", chunk).rowcount
        return changed

    def _drop_through(self, seq: int) -> int:
        cursor = self._db.execute("DELETE FROM entries WHERE parked = 1 AND seq <= ?", (seq,))
        self.rows -= cursor.rowcount
        return cursor.rowcount

    def _expire(self, cutoff: float) -> int:
        """Drop the parked rows made before ``cutoff`` (oldest first, in seq order)."""
        last = None
        cursor = self._db.execute("SELECT seq, created FROM entries WHERE parked = 1 ORDER BY seq")
        while rows := cursor.fetchmany(1000):
            for seq, created in rows:
                if created >= cutoff:
                    break
                last = seq
            else:
                continue
            break
        cursor.close()
        return 0 if last is None else self._drop_through(last)

    def used(self) -> int:
        """Bytes the database's pages in use take (freed pages are reused, not counted)."""
        pages, free, size = (
            self._db.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("page_count", "freelist_count", "page_size")
        )
        return int((pages - free) * size)

    def _cap(self, max_bytes: int) -> int:
        """Drop the oldest parked rows until the database fits in ``max_bytes``."""
        dropped = 0
        for _ in range(8):
            used = self.used()
            if used <= max_bytes or not self.rows:
                break
            # As many rows as the excess holds at the average row size, plus 1%.
            count = max(1, int((used - max_bytes) * self.rows / used) + self.rows // 100)
            row = self._db.execute(
                "SELECT seq FROM entries WHERE parked = 1 ORDER BY seq LIMIT 1 OFFSET ?",
                (count - 1,),
            ).fetchone()
            if row is None:
                row = self._db.execute("SELECT max(seq) FROM entries WHERE parked = 1").fetchone()
                if row[0] is None:
                    break  # only resident rows: they are on their way
            dropped += self._drop_through(row[0])
        return dropped

    def load(self, limit: int) -> list[Loaded]:
        """The first ``limit`` parked rows, in seq order, marked resident."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            rows: list[Loaded] = db.execute(
                "SELECT seq, target, key, secondary, kind, raw, ip FROM entries "
                "WHERE parked = 1 ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
            if rows:
                db.execute(
                    "UPDATE entries SET parked = 0 WHERE parked = 1 AND seq <= ?", (rows[-1][0],)
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return rows

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            os.close(self._lock)  # releases the lock


class SpooledQueue(Queue):
    """The queue, with every entry numbered and its row kept for the spool's writer."""

    __slots__ = ("rows", "seq")

    def __init__(self, last_seq: int) -> None:
        super().__init__()
        self.seq = last_seq
        self.rows: list[Row] = []  # accepted entries the writer has not written yet

    def put(self, kind: int, entry: bytes, who: Who, ip: str | None = None) -> bool:
        self.seq = seq = self.seq + 1
        field, key, _, secondary = who
        self.rows.append((seq, _CODES[field], key, secondary, kind, entry, time.time(), 0, ip))
        ready = Queue.put(self, kind, entry, who, ip)
        self._mark(field, key, kind, seq)
        return ready

    def park(self, kind: int, entry: bytes, who: Who, ip: str | None = None) -> None:
        """Keep an entry on disk only."""
        self.seq = seq = self.seq + 1
        field, key, _, secondary = who
        self.rows.append((seq, _CODES[field], key, secondary, kind, entry, time.time(), 1, ip))

    def load(self, row: Loaded) -> bool:
        """Queue an entry read back from the spool; True when its target became ready."""
        seq, code, key, secondary, kind, raw, ip = row
        field = FIELDS[code]
        ready = Queue.put(self, kind, raw, (field, key, SECONDARY[code], secondary), ip)
        self._mark(field, key, kind, seq)
        return ready

    def _mark(self, field: str, key: str, kind: int, seq: int) -> None:
        batch = self.targets[field][key].last()  # an entry always joins the last batch
        assert batch is not None
        seqs = batch.seqs
        if seqs is None:
            batch.seqs = seqs = ([], [], [])
        seqs[kind].append(seq)


class Spool:
    """The event loop's side of the spool: what to write, park and delete; the writer task."""

    def __init__(
        self,
        options: SpoolOptions,
        file: SpoolFile,
        queue: SpooledQueue,
        ledger: Ledger,
        reporter: Reporter,
        max_queue_size: int,
        overflow: Callable[[bool], None],
        loaded: Callable[[bool], None],
    ) -> None:
        self.options = options
        self._file = file
        self._queue = queue
        self._ledger = ledger
        self._reporter = reporter
        self._max = max_queue_size
        self._overflow = overflow  # True: park every new entry; False: memory takes them again
        self._loaded = loaded  # entries were read back into memory (True: a target is ready)
        self._deletes: list[int] = []
        self._parks: list[int] = []
        self._wake = anyio.Event()
        self._busy = anyio.Lock()  # one database operation at a time (the connection's rule)
        self.paused = False  # the endpoint is dead: read nothing back, for it would be dropped
        self.closed = False
        self.commits = 0  # group commits made (what an entry made before two of them is on disk)

    # Called by the client and the sender (no I/O)

    def park(self, kind: int, entry: bytes, who: Who, ip: str | None = None) -> None:
        """A call's entry goes to disk only: memory is full, or older entries wait there."""
        self._queue.park(kind, entry, who, ip)
        self._ledger.spill()

    def settled(self, target: Target, batch: Batch, reason: DropReason | None) -> bool:
        """A batch has an outcome: delete its rows, or (for reasons that retrying later may
        fix) park them. Returns True when the batch was parked rather than settled."""
        seqs = batch.seqs
        if seqs is None or not batch.size:
            return False
        if reason in _KEEP:
            self._park(batch)
            if reason != "shutdown_timeout":
                # The person's later batches follow it to disk, so they stay behind it; so do
                # the entries the filer has not filed yet.
                self._queue.intake()
                for later in target.cut():
                    self._park(later)
            self._overflow(True)
            return True
        for kind_seqs in seqs:
            self._deletes += kind_seqs
        if self._ledger.spooled and self._ledger.pending - batch.size <= self._max // 2:
            self._wake.set()  # room for parked entries: read them back now
        return False

    def _park(self, batch: Batch) -> None:
        if batch.seqs is not None and batch.size:
            for kind_seqs in batch.seqs:
                self._parks += kind_seqs
            self._ledger.release(batch)

    # The writer

    async def run(self) -> None:
        """Commit every ``commit_interval`` (sooner when parked entries can come back), and
        read parked entries back into memory as room appears."""
        while True:
            with anyio.move_on_after(self.options.commit_interval):
                await self._wake.wait()
            self._wake = anyio.Event()
            await self.step()

    async def step(self) -> None:
        """One group commit, then read parked entries back into the room memory has."""
        try:
            await self.commit()
            ledger = self._ledger
            while not self.paused and ledger.spooled and (room := self._max - ledger.pending) > 0:
                async with self._busy:
                    rows = await anyio.to_thread.run_sync(self._file.load, min(room, _CHUNK))
                if not rows:
                    break
                ready = False
                for row in rows:
                    ready = self._queue.load(row) or ready
                ledger.load(len(rows))
                self._loaded(ready)
            if not ledger.spooled:
                self._overflow(False)
        except sqlite3.Error as exc:  # e.g. the disk is full: keep the rows, try again later
            self._reporter.warn(
                "spool", f"cannot write to the spool {self.options.path}: {exc}; will retry"
            )

    async def commit(self) -> None:
        """Write, park and delete what accumulated since the last commit; apply the caps.

        Cancellation (the client stopping its tasks) can come before the worker thread runs,
        or after it ran: the rows go back to the lists in the first case, and the outcome is
        counted in the second, so the last commit at close finds everything.
        """
        queue, options = self._queue, self.options
        outcome: list[tuple[int, int]] = []  # filled by the thread once the commit is done

        def work(writes: list[Row], deletes: list[int], parks: list[int]) -> None:
            cutoff = time.time() - options.max_age
            outcome.append(self._file.commit(writes, deletes, parks, options.max_bytes, cutoff))

        async with self._busy:
            writes, queue.rows = queue.rows, []
            deletes, self._deletes = self._deletes, []
            parks, self._parks = self._parks, []
            try:
                await anyio.to_thread.run_sync(work, writes, deletes, parks)
            except BaseException:
                if not outcome:  # not committed (rolled back, or never run): next time
                    queue.rows[:0] = writes
                    self._deletes[:0] = deletes
                    self._parks[:0] = parks
                raise
            finally:
                if outcome:
                    self._committed(*outcome[0])

    def _committed(self, full: int, expired: int) -> None:
        self.commits += 1
        options = self.options
        for reason, count, why in (
            ("spool_full", full, f"it holds more than spool_max_bytes={options.max_bytes}"),
            ("expired", expired, f"they waited longer than spool_max_age={options.max_age:g}s"),
        ):
            if count:
                self._ledger.discard(reason, count)  # type: ignore[arg-type]
                self._reporter.warn(
                    reason,
                    f"dropped the {count} oldest entries of the spool {options.path} ({reason}): "
                    f"{why}",
                )

    async def drained(self, settled: Callable[[], Any]) -> None:
        """Wait until nothing is pending, in memory or on disk."""
        ledger = self._ledger
        while ledger.pending or (ledger.spooled and not self.paused):
            if ledger.pending:
                await settled()
            else:
                self._wake.set()
                await anyio.sleep(0.01)

    async def close(self) -> None:
        """The final commit (leftovers are parked by now), then release the file."""
        if self.closed:
            return
        self.closed = True
        try:
            await self.commit()
        except sqlite3.Error as exc:
            logger.error(  # noqa: TRY400 - the message says it all; no traceback for a full disk
                "the last commit to the spool %s failed: %s", self.options.path, exc
            )
        finally:
            async with self._busy:
                await anyio.to_thread.run_sync(self._file.close)


# Reading a spool from outside (the command line)


@dataclass(frozen=True)
class Summary:
    """What a spool holds."""

    entries: int
    bytes: int
    oldest: float | None
    people: int


def inspect(path: str) -> Summary:
    """Summarise a spool without taking its lock (read only)."""
    db = _connect(path, readonly=True)
    try:
        count, oldest = db.execute("SELECT count(*), min(created) FROM entries").fetchone()
        people = db.execute(
            "SELECT count(*) FROM (SELECT DISTINCT target, key FROM entries)"
        ).fetchone()[0]
        size = int(db.execute("SELECT coalesce(sum(length(raw)), 0) FROM entries").fetchone()[0])
        return Summary(count, size, oldest, people)
    finally:
        db.close()


def rows(path: str) -> Iterator[tuple[str, str, str, str | None, int, bytes, str | None]]:
    """Every entry, in the order made: (field, key, secondary field, secondary, kind, raw,
    ip)."""
    db = _connect(path, readonly=True)
    try:
        for code, key, secondary, kind, raw, ip in db.execute(
            "SELECT target, key, secondary, kind, raw, ip FROM entries ORDER BY seq"
        ):
            yield FIELDS[code], key, SECONDARY[code], secondary, kind, raw, ip
    finally:
        db.close()


def oldest(path: str) -> float | None:
    """When the oldest entry in the spool was accepted (``time.time()``), or None if it is
    empty: one indexed read, no checks (for metrics, read while a client writes)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        row = db.execute("SELECT created FROM entries ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else float(row[0])
    finally:
        db.close()
