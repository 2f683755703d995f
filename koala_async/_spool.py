"""The durable spool (opt-in): accepted entries kept in SQLite until Koala took them.

Store, then send, then delete. A call never touches the disk: :class:`SpooledQueue` numbers
each entry it queues (its *seq*, the order entries were made in) and appends a row to an
in-memory list; :meth:`Spool.run`, a background task, writes those rows every
``commit_interval`` in one transaction, in a worker thread, together with the deletions of
the entries settled since (delivered, or refused for good). A row whose deletion arrives
before it was written is never written. The rows of a commit that memory holds too are
written as one *chunk* (a row of ``chunks``), deleted once each of its entries is settled.

An entry is *resident* (also in memory, in a batch; in a chunk, or a row of ``entries``
read back) or *parked* (a row of ``entries``, on disk only).
Entries are parked when memory is full (the call writes them to disk only), when a batch
runs out of retries (it and the person's later batches go back to disk, keeping their
order), at shutdown (what the deadline leaves), and at open (what an earlier run left).
While anything is parked, new entries are parked too, and the writer reads parked rows back
into memory in seq order as room appears: so each person's entries are sent in the order
they were made, and memory holds at most ``max_queue_size`` entries.

The database work is in :class:`SpoolFile` (plain blocking methods), run by a
:class:`Writer`, the one thread that uses the connection, one job at a time; :class:`Spool`
is the event loop's side of it.
"""

from __future__ import annotations

import asyncio
import atexit
import bisect
import contextlib
import glob
import heapq
import logging
import math
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import anyio
import msgspec
import sniffio

from ._exceptions import SpoolError, ValidationError
from ._ledger import Ledger
from ._queue import Batch, Item, Queue, Target, new_seqs, reraise
from ._reporter import Reporter
from ._stats import DropReason
from ._validate import Who

__all__ = ["Spool", "SpoolFile", "SpoolOptions", "SpooledQueue", "Writer", "inspect"]

logger = logging.getLogger("koala_async")

APPLICATION_ID = 0x4B6F5370  # "KoSp", in the database header: the file is a koala-async spool
VERSION = 2  # the schema's version, in the header's user_version (1: no chunks table)
FIELDS = ("profile_id", "email", "domain", "account_id")
SECONDARY = ("email", "email", "account_id", "account_id")
_CODES = {field: code for code, field in enumerate(FIELDS)}
_CHUNK = 5000  # rows read back into memory at once
# A new file's page size: a commit's chunk fills half as many pages as with SQLite's 4096
# (its CPU per entry: 0.69 -> 0.53 µs), and the empty file's 6 pages (48 KiB) still leave
# room under the smallest spool_max_bytes (64 KiB). A file made with another keeps it.
PAGE_SIZE = 8192
WAL_BYTES = 32 << 20  # the write-ahead log's size between checkpoints (see wal_bytes)
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
# Resident entries are written one commit to a row: a row per entry cost 2 µs to insert
# and 0.7 to delete, 3x what the client spends on an event. A chunk is deleted once every
# entry in it is settled; until then each commit records the runs of it that it settled.
# At open, the entries of the chunks left that no record covers are parked (a crash).
_CHUNKS = """
CREATE TABLE chunks (
    first INTEGER PRIMARY KEY,  -- the seq of its first entry
    created REAL NOT NULL,  -- its first entry's
    data BLOB NOT NULL  -- its entries' rows (as in entries), msgpack-encoded, in seq order
);
CREATE TABLE settled (  -- runs of a chunk's entries settled (or moved to entries by a park)
    chunk INTEGER NOT NULL,  -- the chunk's first
    first INTEGER NOT NULL,
    last INTEGER NOT NULL
);
CREATE INDEX settled_chunk ON settled(chunk);
"""
_COLUMNS = ["seq", "target", "key", "secondary", "kind", "raw", "created", "parked", "ip"]
_ROWS = 200  # rows per INSERT statement (1,800 parameters, under SQLite's limit of 32,766)


def _insert(rows: int) -> str:
    return "INSERT INTO entries VALUES " + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)


_INSERT_MANY = _insert(_ROWS)

Row = tuple[int, int, str, "str | None", int, bytes, float, int, "str | None"]
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(
    list[tuple[int, int, str, str | None, int, bytes, float, int, str | None]]
).decode
Loaded = tuple[int, int, str, "str | None", int, bytes, "str | None"]


class Fresh(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """An entry's row as a call made it, until the writer has written it: encoded as the
    tuple :data:`Row` is. Not tracked by the garbage collector (a tuple per entry waiting
    to be written made the collector run twice as often, and its full passes with it)."""

    seq: int
    code: int
    key: str
    secondary: str | None
    kind: int
    raw: bytes
    created: float
    parked: int
    ip: str | None

    def row(self) -> Row:
        return msgspec.structs.astuple(self)


@dataclass(frozen=True)
class SpoolOptions:
    """The spool's checked options."""

    path: str  # the file; with ``directory``, the directory until open picks a file in it
    commit_interval: float
    max_bytes: int
    max_age: float
    directory: bool = False  # spool_dir: each process takes a free file in ``path``

    @classmethod
    def build(
        cls,
        path: object,
        commit_interval: object,
        max_bytes: object,
        max_age: object,
        directory: object = None,
    ) -> SpoolOptions:
        if directory is not None:
            if path is not None:
                raise ValidationError(
                    "pass spool (one process's file) or spool_dir (a directory that many "
                    "workers share), not both"
                )
            if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
                raise ValidationError(f"spool_dir must be a directory path, got {directory!r}")
            path = directory
        elif not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
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
        return cls(
            str(os.fspath(path)),
            float(commit_interval),
            max_bytes,
            float(max_age),
            directory is not None,
        )


def _refuse(path: str, why: str) -> SpoolError:
    return SpoolError(
        f"{path} is not a koala-async spool that can be read ({why}); it was left untouched: "
        "move it aside, or pass another spool path"
    )


def _unwritable(path: str, error: BaseException) -> SpoolError:
    """The spool cannot be written where it is: say where, why, and what to do."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        fix = f"the directory {directory} does not exist: create it"
    else:
        fix = (
            f"{path}, its .lock, -wal and -shm files and the directory {directory} must be "
            "writable by this process (check the permissions, a read-only mount, or an "
            "immutable file: lsattr)"
        )
    return SpoolError(f"cannot open the spool {path} for writing ({error}): {fix}; "
                      "or pass another spool path")  # fmt: skip


# SQLite's result codes that say the file cannot be written (not that it is not a spool)
_UNWRITABLE = {3, 8, 10, 13, 14}  # PERM, READONLY, IOERR, FULL, CANTOPEN


def _cannot_write(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _UNWRITABLE


def _try_lock(path: str) -> int | str:
    """Take the spool's lock (a sidecar file holding the owner's pid): its fd, or the pid of
    the live process that holds it. The OS releases it when the owner's process ends,
    however it ends.

    Raises:
        SpoolError: the lock file cannot be made (a missing or read-only directory).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        raise SpoolError("the spool needs a POSIX system (fcntl.flock)") from None
    try:
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        return owner
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _lock(path: str) -> int:
    """Take the spool's lock, or say who holds it."""
    fd = _try_lock(path)
    if isinstance(fd, str):
        owner = fd
        raise SpoolError(
            f"the spool {path} is in use by process {owner} (a KoalaClient, or `koala-async "
            "spool --send`); two owners would send everything twice. Give each process its own "
            "spool file (spool_dir= does that for workers that share one configuration)"
        )
    return fd


SLOT = "koala-spool-{}.db"  # the files of spool_dir, by slot number
_SLOTS = 4096  # slots tried at most


def _take_slot(directory: str) -> tuple[str, int]:
    """The first free file of ``directory`` (its lock taken): a file whose owner is gone
    (its entries are this process's now), or a new one."""
    if not os.path.isdir(directory):
        raise _unwritable(os.path.join(directory, SLOT.format(0)), FileNotFoundError(directory))
    for slot in range(_SLOTS):
        path = os.path.join(directory, SLOT.format(slot))
        fd = _try_lock(path)
        if not isinstance(fd, str):
            return path, fd
    raise SpoolError(f"all {_SLOTS} spool files in {directory} are in use: use another spool_dir")


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
        if readonly:
            raise SpoolError(f"cannot read the spool {path}: {exc}") from None
        raise _unwritable(path, exc) from None
    if header and header != b"SQLite format 3\x00":
        raise _refuse(path, "it is not an SQLite database")
    uri = f"file:{path}?mode=ro" if readonly else path
    try:
        db = sqlite3.connect(uri, uri=readonly, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise (SpoolError(f"cannot open the spool {path}: {exc}") if readonly
               else _unwritable(path, exc)) from None  # fmt: skip
    try:
        _check(db, path, readonly)
    except sqlite3.DatabaseError as exc:
        db.close()
        if not readonly and _cannot_write(exc):
            raise _unwritable(path, exc) from None
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
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # (only before the first table)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(
            f"BEGIN; {_SCHEMA} {_CHUNKS} PRAGMA application_id={APPLICATION_ID}; "
            f"PRAGMA user_version={VERSION}; COMMIT;"
        )
    elif app != APPLICATION_ID:
        raise _refuse(path, f"another program's SQLite database (application_id {app})")
    elif version not in (1, VERSION):
        raise _refuse(path, f"schema version {version}, this koala-async reads {VERSION}")
    else:
        columns = [row[1] for row in db.execute("PRAGMA table_info(entries)")]
        if columns != _COLUMNS:
            raise _refuse(path, "its table is not the spool's")
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise _refuse(path, f"corrupt: {check}")
        if version == 1 and not readonly:  # the previous release's file: add the chunks
            db.executescript(f"BEGIN; {_CHUNKS} PRAGMA user_version={VERSION}; COMMIT;")
    if not readonly:
        db.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL: a commit survives the process being killed; only a
        # power loss may undo the last commits (never corrupt the file).
        db.execute("PRAGMA synchronous=NORMAL")
        # Deleted content is zeroed where that costs no extra write (in the pages written
        # anyway), not in the pages a deleted chunk frees: some builds (Debian's) zero those
        # too, by default, which doubled what writing a commit cost (0.37 µs an entry).
        db.execute("PRAGMA secure_delete=FAST")


def wal_bytes(max_bytes: int, page: int) -> int:
    """How large the write-ahead log may grow between checkpoints for a spool capped at
    ``max_bytes``: :data:`WAL_BYTES`, but no more than the cap (a small spool on a small
    disk keeps a small log), nor less than SQLite's own default of 1,000 pages."""
    return min(WAL_BYTES, max(max_bytes, 1000 * page))


def _bound_wal(db: sqlite3.Connection, max_bytes: int) -> None:
    """The WAL is copied into the file once it holds :func:`wal_bytes` (SQLite: 1000 pages),
    and cut back to that size after: pages a commit frees and the next reuses are then copied
    once rather than at each checkpoint (a commit's CPU: 0.59-0.65 -> 0.46-0.48 µs an entry
    with 8 KiB pages, at 32 MiB)."""
    page = db.execute("PRAGMA page_size").fetchone()[0]
    size = wal_bytes(max_bytes, page)
    db.execute(f"PRAGMA wal_autocheckpoint={size // page}")
    db.execute(f"PRAGMA journal_size_limit={size}")


def runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Seqs (in any order, repeats allowed) as sorted runs of consecutive ones, ``(first,
    last)`` each. A commit's seqs are mostly a few long runs: a slice whose ends are as
    far apart as its length is one run, so halving finds the gaps without visiting every
    seq in Python."""
    ordered = sorted(set(seqs))
    found: list[tuple[int, int]] = []
    pending = [(0, len(ordered))] if ordered else []
    while pending:
        low, high = pending.pop()
        first, last = ordered[low], ordered[high - 1]
        if last - first == high - 1 - low:
            if found and found[-1][1] + 1 == first:
                found[-1] = (found[-1][0], last)
            else:
                found.append((first, last))
        else:
            middle = (low + high) // 2
            pending += ((middle, high), (low, middle))  # the lower half first
    return found


def _fold(db: sqlite3.Connection) -> None:
    """Park the entries of the chunks an earlier run left (it crashed), but those it
    recorded as settled: only a batch settled after the last commit is sent again."""
    for (data,) in db.execute("SELECT data FROM chunks ORDER BY first").fetchall():
        db.executemany(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)",
            [(*row[:7], row[8]) for row in _unsettled(db, data)],
        )
    db.execute("DELETE FROM chunks")
    db.execute("DELETE FROM settled")


def _unsettled(db: sqlite3.Connection, data: bytes) -> list[Row]:
    """A chunk's entries that its settled runs do not cover."""
    members = _decode(data)
    if not members:
        return members
    spans = db.execute("SELECT first, last FROM settled WHERE chunk = ?", (members[0][0],))
    gone = {seq for first, last in spans for seq in range(first, last + 1)}
    return [row for row in members if row[0] not in gone] if gone else members


class _Chunk:
    """A chunk's members in memory: a flag per seq from ``first`` to ``last``, 1 while
    that entry is a member not yet settled."""

    __slots__ = ("first", "last", "members", "unsettled")

    def __init__(self, rows: list[Fresh]) -> None:
        self.first, self.last = rows[0].seq, rows[-1].seq
        if self.last - self.first + 1 == len(rows):  # (mostly: every seq a member)
            self.members = bytearray(b"\x01" * len(rows))
        else:
            self.members = bytearray(self.last - self.first + 1)
            for row in rows:
                self.members[row.seq - self.first] = 1
        self.unsettled = len(rows)


Undo = list[tuple[_Chunk, int, bytes]]


class SpoolFile:
    """The spool's database and lock. Blocking methods: call them from a worker thread."""

    def __init__(self, path: str, db: sqlite3.Connection, lock: int) -> None:
        self.path = path
        self._db = db
        self.lock = lock  # the lock file's fd: closing it releases the lock
        self.rows = 0  # entries held: rows in entries, and chunk members not settled
        self.last_seq = 0
        self._chunks: list[_Chunk] = []  # the chunks on disk, by first seq

    @classmethod
    def open(
        cls, path: str, lock: int | None = None, max_bytes: int = WAL_BYTES
    ) -> tuple[SpoolFile, int]:
        """Lock, check (or create) and open the spool; park every row an earlier run left.
        Returns the file and how many entries it holds. ``max_bytes``: the spool's cap,
        which bounds its write-ahead log too (see :func:`wal_bytes`).

        Raises:
            SpoolError: another live process owns it, or it is not a readable spool.
        """
        if lock is None:
            lock = _lock(path)
        db = None
        try:
            db = _connect(path)
            _bound_wal(db, max_bytes)
            db.execute("BEGIN IMMEDIATE")
            _fold(db)
            db.execute("UPDATE entries SET parked = 1 WHERE parked = 0")
            count, last = db.execute(
                "SELECT count(*), coalesce(max(seq), 0) FROM entries"
            ).fetchone()
            db.execute("COMMIT")
        except BaseException as exc:
            # Nothing is kept open: a retry in this process, once the cause is fixed, works.
            if db is not None:
                db.close()
            os.close(lock)
            if isinstance(exc, sqlite3.Error):
                raise _unwritable(path, exc) from None
            raise
        spool = cls(path, db, lock)
        spool.rows, spool.last_seq = count, last
        return spool, count

    def adopt(self, directory: str) -> int:
        """Take over the files of ``directory`` whose owners are gone: their entries are
        copied into this file (parked, before its own, each file's in their order), then the
        file is removed. Returns how many entries came. A file that is not a readable
        spool is left alone (and logged)."""
        adopted = 0
        for path in sorted(glob.glob(os.path.join(glob.escape(directory), SLOT.format("*")))):
            if path == self.path:
                continue
            lock = _try_lock(path)
            if isinstance(lock, str):
                continue  # its owner is alive: its entries are its own
            try:
                adopted += self._adopt(path)
            except (SpoolError, sqlite3.Error) as exc:
                logger.warning("cannot adopt the spool %s of a process that is gone: %s", path, exc)
            finally:
                os.close(lock)
        return adopted

    def _adopt(self, path: str) -> int:
        if not os.path.exists(path):
            return 0
        other = _connect(path)  # check it is a spool (and fold its WAL in)
        try:
            other.execute("BEGIN IMMEDIATE")
            _fold(other)
            other.execute("COMMIT")
        finally:
            other.close()
        db = self._db
        db.execute("ATTACH DATABASE ? AS other", (path,))
        try:
            count, last = db.execute("SELECT count(*), max(seq) FROM other.entries").fetchone()
            if count:
                self._begin()
                try:
                    # Below every seq in use (negative ones included): the loop numbers new
                    # entries upwards meanwhile, and these, older, are read back first.
                    low = db.execute("SELECT min(0, coalesce(min(seq), 0)) FROM main.entries")
                    db.execute(
                        "INSERT INTO main.entries SELECT seq + ?, target, key, secondary, kind, "
                        "raw, created, 1, ip FROM other.entries ORDER BY seq",
                        (low.fetchone()[0] - 1 - last,),
                    )
                    db.execute("DELETE FROM other.entries")
                    db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
                self.rows += count
        finally:
            db.execute("DETACH DATABASE other")
        for suffix in ("-wal", "-shm", ""):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)
        if count:
            logger.info(
                "adopted %d entries from the spool %s of a process that is gone", count, path
            )
        return int(count)

    def commit(
        self,
        writes: list[Fresh],
        deletes: list[int],
        parks: list[int],
        max_bytes: int,
        cutoff: float,
    ) -> tuple[int, int]:
        """Write, park and delete in one transaction, then apply the caps to parked rows:
        return how many were dropped past ``max_bytes`` and how many were older than
        ``cutoff``. On an error nothing of it is kept (the caller keeps the lists)."""
        rows, undo = self.rows, Undo()
        chunk: _Chunk | None = None
        parked: list[Row] = []
        try:
            self._begin()
            if parks and writes:  # parked before it was written: written parked
                early = set(parks)
                writes = [
                    msgspec.structs.replace(row, parked=1) if row.seq in early else row
                    for row in writes
                ]
            resident = [row for row in writes if not row.parked]
            if len(resident) < len(writes):
                self._insert([row.row() for row in writes if row.parked])
            if resident:
                chunk = self._write_chunk(resident)
            if parks:
                spans = runs(parks)
                self._ranges("UPDATE entries SET parked = 1", spans)
                parked = self._members(self._settle(spans, undo))
            if deletes:
                spans = runs(deletes)
                self.rows -= self._ranges("DELETE FROM entries", spans)
                settled = self._settle(spans, undo)
                self.rows -= sum([flags.count(1) for _, _, flags in settled])
            emptied = [(c.first,) for c in self._chunks if not c.unsettled]
            before = self.used() if parked else 0
            self._record(undo, emptied)
            if parked:  # (after: the pages of the chunks emptied are used again)
                self._insert(parked)
                self.rows -= len(parked)  # moved, not added
                # Rows of their own take a few pages more than the chunk did: the cap
                # allows for that, as parking in place grew nothing.
                max_bytes += max(0, self.used() - before)
            expired = self._expire(cutoff)
            full = self._cap(max_bytes)
            self._db.execute("COMMIT")
        except BaseException:
            self.rows = rows
            for member, start, flags in reversed(undo):
                member.members[start : start + len(flags)] = flags
                member.unsettled += flags.count(1)
            self._rollback()
            raise
        if emptied:
            self._chunks = [c for c in self._chunks if c.unsettled]
        if chunk is not None:
            bisect.insort(self._chunks, chunk, key=lambda c: c.first)
        return full, expired

    def _record(self, hits: Undo, emptied: list[tuple[int]]) -> None:
        """Write down what this commit settled in chunks that still hold entries (the next
        open skips those), and delete the chunks emptied, with their records."""
        self._db.executemany(
            "INSERT INTO settled VALUES (?, ?, ?)",
            [(c.first, c.first + lo, c.first + lo + len(flags) - 1)
             for c, lo, flags in hits if c.unsettled],
        )  # fmt: skip
        self._db.executemany("DELETE FROM chunks WHERE first = ?", emptied)
        self._db.executemany("DELETE FROM settled WHERE chunk = ?", emptied)

    def _write_chunk(self, resident: list[Fresh]) -> _Chunk:
        """Write a commit's resident entries as one row of chunks."""
        self._db.execute(
            "INSERT INTO chunks VALUES (?, ?, ?)",
            (resident[0].seq, resident[0].created, _encode(resident)),
        )
        self.rows += len(resident)
        return _Chunk(resident)

    def _settle(self, spans: list[tuple[int, int]], undo: Undo) -> Undo:
        """Mark the chunk members in ``spans`` settled; return each chunk touched, the
        offset and the flags its members had there (also kept in ``undo``)."""
        hits: Undo = []
        chunks = self._chunks
        for a, b in spans:
            i = bisect.bisect_right(chunks, b, key=lambda c: c.first) - 1
            while i >= 0 and (chunk := chunks[i]).last >= a:
                lo, hi = max(a, chunk.first) - chunk.first, min(b, chunk.last) - chunk.first + 1
                flags = bytes(chunk.members[lo:hi])
                count = flags.count(1)
                if count:
                    chunk.members[lo:hi] = bytes(hi - lo)
                    chunk.unsettled -= count
                    hits.append((chunk, lo, flags))
                i -= 1
        undo += hits
        return hits

    def _members(self, hits: Undo) -> list[Row]:
        """The rows of the chunk members just settled by a park, marked parked, in seq
        order (each chunk read once, however many runs of it were parked)."""
        wanted: dict[int, set[int]] = {}
        for chunk, lo, flags in hits:
            seqs = wanted.setdefault(chunk.first, set())
            seqs.update(chunk.first + lo + k for k, flag in enumerate(flags) if flag)
        parked: list[Row] = []
        for first, seqs in sorted(wanted.items()):
            (data,) = self._db.execute(
                "SELECT data FROM chunks WHERE first = ?", (first,)
            ).fetchone()
            parked += [(*row[:7], 1, row[8]) for row in _decode(data) if row[0] in seqs]
        return parked

    def last_commit(
        self,
        writes: list[Fresh],
        deletes: list[int],
        parks: list[int],
        max_bytes: int,
        cutoff: float,
    ) -> tuple[int, int, int, sqlite3.Error | None]:
        """The commit at close, which must leave the file holding what the client counts:
        if the whole commit fails (a full disk), the deletions and parks alone (they take
        no room), then the rows in small transactions while they fit. Returns (full,
        expired, rows not written, the error that stopped it)."""
        try:
            return (*self.commit(writes, deletes, parks, max_bytes, cutoff), 0, None)
        except sqlite3.Error as exc:
            error = exc
        # Rows whose deletion fails too are sent again by the next client (at least once).
        with contextlib.suppress(sqlite3.Error):
            self.commit([], deletes, parks, max_bytes, cutoff)
        written = 0
        for start in range(0, len(writes), _ROWS):
            try:
                self.commit(writes[start : start + _ROWS], [], [], max_bytes, cutoff)
            except sqlite3.Error:
                break
            written += len(writes[start : start + _ROWS])
        return 0, 0, len(writes) - written, error

    def _begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def _rollback(self) -> None:
        """Roll back what is left of a failed transaction. SQLite may have rolled it back
        itself (a full disk does): then there is nothing to do, and trying would replace
        the real cause with "cannot rollback - no transaction is active"."""
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                logger.debug("rollback of the spool %s failed", self.path, exc_info=True)

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

    def _ranges(self, statement: str, spans: list[tuple[int, int]]) -> int:
        """Run ``statement WHERE seq BETWEEN first AND last`` for each run of consecutive
        seqs (in seq order: the B-tree's pages are visited once each); return the rows
        changed. A person's batch is a run, and so are many people's in the order they
        were made: one statement per run binds 2 parameters, not 1 per seq."""
        return self._db.executemany(f"{statement} WHERE seq BETWEEN ? AND ?", spans).rowcount

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
            self._rollback()
            raise
        return rows

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            os.close(self.lock)  # releases the lock


class SpooledQueue(Queue):
    """The queue, with every entry numbered and its row kept for the spool's writer."""

    __slots__ = ("rows", "seq")

    def __init__(
        self, last_seq: int, on_unfiled: Callable[[Exception, Item], None] = reraise
    ) -> None:
        super().__init__(on_unfiled)
        self.seq = last_seq
        self.rows: list[Fresh] = []  # accepted entries the writer has not written yet

    def put(self, kind: int, entry: bytes, who: Who, ip: str | None = None) -> bool:
        self.seq = seq = self.seq + 1
        field, key, _, secondary = who
        self.rows.append(Fresh(seq, _CODES[field], key, secondary, kind, entry, time.time(), 0, ip))
        return self._file(kind, entry, who, ip, seq)

    def park(self, kind: int, entry: bytes, who: Who, ip: str | None = None) -> None:
        """Keep an entry on disk only."""
        self.seq = seq = self.seq + 1
        field, key, _, secondary = who
        self.rows.append(Fresh(seq, _CODES[field], key, secondary, kind, entry, time.time(), 1, ip))

    def load(self, row: Loaded) -> bool:
        """Queue an entry read back from the spool; True when its target became ready."""
        seq, code, key, secondary, kind, raw, ip = row
        field = FIELDS[code]
        return self._file(kind, raw, (field, key, SECONDARY[code], secondary), ip, seq)

    def _file(self, kind: int, entry: bytes, who: Who, ip: str | None, seq: int) -> bool:
        """Queue an entry and note its seq in its batch, the target's open one (the batch
        an entry joins, or starts, is open until a sender seals it)."""
        ready = Queue.put(self, kind, entry, who, ip)
        batch = self.targets[who[0]][who[1]].open
        assert batch is not None
        seqs = batch.seqs
        if seqs is None:
            batch.seqs = seqs = new_seqs()
        seqs[kind].append(seq)
        return ready


Outcome = Callable[[Any, "BaseException | None"], None]
_writers: weakref.WeakSet[Writer] = weakref.WeakSet()
CLOSE_WAIT = 60.0  # seconds a close waits for the writer's last commit (it goes on after)
ADOPT_EVERY = 10.0  # seconds between looks for files of dead workers in a spool_dir


def _notifier() -> Callable[..., None]:
    """What runs a function in the running event loop's thread, soon, from another thread;
    nothing once that loop has ended (the process is going: the outcome has no reader)."""
    if sniffio.current_async_library() == "trio":
        import trio

        token = trio.lowlevel.current_trio_token()

        def notify_trio(function: Callable[..., None], *args: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(function, *args)

        return notify_trio
    loop = asyncio.get_running_loop()

    def notify_asyncio(function: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(function, *args)

    return notify_asyncio


class Writer:
    """The one thread that uses a spool's database: it opens the file, runs the event
    loop's jobs one at a time in the order given, and closes it.

    Why a thread of its own: a job is never abandoned while it uses the connection. A wait
    that is cancelled (a close cut short, Ctrl-C, ``task.cancel()``) leaves the job running;
    its outcome is applied in the loop's thread when it is done, whoever still waits, and the
    connection is closed by this thread after its last job."""

    def __init__(self, path: str, directory: bool = False, max_bytes: int = WAL_BYTES) -> None:
        self.path = path  # the file (with ``directory``: the directory until open)
        self._directory = directory
        self._max_bytes = max_bytes  # the spool's cap: it bounds the write-ahead log too
        self.file: SpoolFile | None = None
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Callable[..., None]] | None] = (
            queue.SimpleQueue()
        )
        self._notify = _notifier()
        self._busy: anyio.Event | None = None  # set once the running job's outcome is applied
        self._thread = threading.Thread(target=self._serve, name="koala-spool", daemon=True)
        _writers.add(self)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                work, finish = job
                try:
                    result, error = work(), None
                except BaseException as exc:
                    result, error = None, exc
                self._notify(finish, result, error)
                if self.file is None:  # the open failed, or this was the close
                    break
        finally:
            if self.file is not None:  # stopped without a close (at exit, a cancelled open)
                file, self.file = self.file, None
                file.close()
            _writers.discard(self)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    async def idle(self) -> None:
        """Wait until no job is running (and the last one's outcome was applied)."""
        while self._busy is not None:
            await self._busy.wait()

    async def run(self, work: Callable[[], Any], then: Outcome | None = None) -> Any:
        """Run ``work()`` in the thread, after the running job; ``then(result, error)`` is
        applied in the loop's thread when it is done, even if this wait was cancelled.
        Returns the result or raises the error."""
        await self.idle()
        done = self._busy = anyio.Event()
        outcome: list[tuple[Any, BaseException | None]] = []

        def finish(result: Any, error: BaseException | None) -> None:
            self._busy = None
            outcome.append((result, error))
            try:
                if then is not None:
                    then(result, error)
            except Exception:  # a bug: the loop's callbacks must not raise
                logger.exception("unexpected error applying the spool's outcome")
            done.set()

        self._jobs.put((work, finish))
        await done.wait()
        result, error = outcome[0]
        if error is not None:
            raise error
        return result

    def stop(self) -> None:
        """Have the thread close the file after the jobs it was given, and end."""
        self._jobs.put(None)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    async def open(self) -> int:
        """Open the file in the thread; return how many entries an earlier run left.

        Raises:
            SpoolError: as :meth:`SpoolFile.open`; the thread has ended by then.
        """

        def work() -> int:
            if not self._directory:
                self.file, held = SpoolFile.open(self.path, max_bytes=self._max_bytes)
                return held
            directory = self.path
            path, lock = _take_slot(directory)
            self.file, held = SpoolFile.open(path, lock, self._max_bytes)
            self.path = path
            try:
                return held + self.file.adopt(directory)
            except BaseException:
                file, self.file = self.file, None
                file.close()
                raise

        try:
            held: int = await self.run(work)
        except BaseException:
            self.stop()  # a cancelled open: the thread closes what it opened meanwhile
            raise
        return held


def _stop_writers() -> None:
    """At interpreter exit: each writer runs the jobs it was given and closes its file."""
    writers = list(_writers)
    for writer in writers:
        writer.stop()
    end = time.monotonic() + CLOSE_WAIT
    for writer in writers:
        writer.join(max(0.0, end - time.monotonic()))


atexit.register(_stop_writers)


def _after_fork_in_child() -> None:
    """A forked child has no writer thread; its copy of each lock's fd would hold the lock
    after the parent died, so it is closed (the parent's copy keeps the lock). The
    connection is left alone: closing it here could touch the parent's file."""
    for writer in list(_writers):
        if writer.file is not None:
            os.close(writer.file.lock)
            writer.file = None
    _writers.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Spool:
    """The event loop's side of the spool: what to write, park and delete; the writer task."""

    def __init__(
        self,
        options: SpoolOptions,
        writer: Writer,
        queue: SpooledQueue,
        ledger: Ledger,
        reporter: Reporter,
        max_queue_size: int,
        overflow: Callable[[bool], None],
        loaded: Callable[[bool], None],
        directory: str | None = None,
    ) -> None:
        self.options = options
        self._writer = writer
        self._directory = directory  # spool_dir: adopt the files of workers that died since
        self._queue = queue
        self._ledger = ledger
        self._reporter = reporter
        self._max = max_queue_size
        # Rows not yet written that memory holds at most: past it, a call waits for the
        # writer (it is behind), or, while the disk refuses them, its entry is dropped.
        self.cap = max(max_queue_size, 1000)
        self._overflow = overflow  # True: park every new entry; False: memory takes them again
        self._loaded = loaded  # entries were read back into memory (True: a target is ready)
        self._deletes: list[int] = []
        self._parks: list[int] = []
        self._wake = anyio.Event()
        self._taken = anyio.Event()  # set when a commit took the rows written so far
        self.paused = False  # the endpoint is dead: read nothing back, for it would be dropped
        self.closed = False
        self.failing: sqlite3.Error | None = None  # the last commit's error, until one works
        self.commits = 0  # group commits made (what an entry made before two of them is on disk)
        self.loaded_seq = 0  # the last seq read back into memory
        self.parked_seq = queue.seq  # the last seq parked (at open: every row is)
        self._writing = 0  # rows in the commit under way

    # Called by the client and the sender (no I/O)

    def park(self, kind: int, entry: bytes, who: Who, ip: str | None = None) -> bool:
        """A call's entry goes to disk only: memory is full, or older entries wait there.
        False: it was dropped (``spool_full``), for the disk refuses rows and as many as
        :attr:`cap` wait in memory to be written."""
        if self.failing is not None and self.unwritten >= self.cap:
            return False
        self._queue.park(kind, entry, who, ip)
        self.parked_seq = self._queue.seq
        self._ledger.spill()
        return True

    @property
    def unwritten(self) -> int:
        """Rows memory holds for the writer: waiting, and in the commit under way."""
        return len(self._queue.rows) + self._writing

    @property
    def behind(self) -> bool:
        """:attr:`cap` rows wait for the writer (besides those it is writing): calls should
        wait until it takes them."""
        return self.failing is None and len(self._queue.rows) >= self.cap

    async def catch_up(self) -> None:
        """Wait until the writer took the rows waiting (a call waits here when it is
        behind: the disk is slower than the calls, and memory must stay bounded)."""
        while self.behind and not self.closed:
            self._wake.set()
            taken = self._taken
            await taken.wait()

    def settled(self, target: Target, batch: Batch, reason: DropReason | None) -> bool:
        """A batch has an outcome: delete its rows, or (for reasons that retrying later may
        fix) park them. Returns True when the batch was parked rather than settled."""
        seqs = batch.seqs
        if seqs is None or not batch.size:
            return False
        if reason in _KEEP:
            self._park(batch)
            if reason != "shutdown_timeout":
                # The person's batches not in flight follow it to disk, so they stay behind
                # it; so do the entries the filer has not filed yet.
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
                if kind_seqs and kind_seqs[-1] > self.parked_seq:
                    self.parked_seq = kind_seqs[-1]
            self._ledger.release(batch)

    def abandon(self) -> None:
        """The event loop ended without a close: the writer runs what it was given, then
        closes the file (and releases the lock)."""
        self.closed = True
        self._writer.stop()

    def behind_seq(self, seq: int) -> bool:
        """Entries up to ``seq`` still wait on disk to be read back (a flush waits for them)."""
        return bool(self._ledger.spooled) and not self.paused and self.loaded_seq < seq

    def wake(self) -> None:
        """Commit and read parked entries back now, rather than at the next interval."""
        self._wake.set()

    # The writer

    async def run(self) -> None:
        """Commit every ``commit_interval`` (sooner when parked entries can come back), and
        read parked entries back into memory as room appears."""
        adopt_at = time.monotonic() + ADOPT_EVERY
        while True:
            if not self._wake.is_set():  # (set during the last step: go on at once)
                with anyio.move_on_after(self.options.commit_interval):
                    await self._wake.wait()
            self._wake = anyio.Event()
            await self.step()
            if self._directory is not None and time.monotonic() >= adopt_at:
                await self.adopt()
                adopt_at = time.monotonic() + ADOPT_EVERY

    async def adopt(self) -> None:
        """Adopt the files of the directory whose owners died since (a sibling killed by
        SIGKILL or the OOM killer): their entries are sent from here."""
        writer, directory = self._writer, self._directory
        assert directory is not None

        def work() -> int:
            assert writer.file is not None
            return writer.file.adopt(directory)

        def then(count: int | None, error: BaseException | None) -> None:
            if count:
                self._ledger.recover(count)
                self._overflow(True)  # new entries wait behind them, as at open
                self._wake.set()

        with contextlib.suppress(sqlite3.Error, SpoolError):
            await writer.run(work, then)

    async def step(self) -> None:
        """One group commit, then read parked entries back into the room memory has."""
        with contextlib.suppress(sqlite3.Error):  # reported by _failed; the rows are kept
            await self.commit()
        ledger = self._ledger
        while not self.paused and ledger.spooled and (room := self._max - ledger.pending) > 0:
            try:
                count = await self._writer.run(self._load_work(min(room, _CHUNK)), self._load)
            except sqlite3.Error as exc:
                self._failed(exc)
                return
            if not count:  # nothing parked on disk: what is parked waits to be written
                if self.failing is not None:
                    self._unpark_unwritten(room)
                break
        if not ledger.spooled:
            self._overflow(False)

    def _unpark_unwritten(self, room: int) -> None:
        """The disk refuses rows and none is parked on it: the parked entries waiting to be
        written come back into memory (older first) to be sent from there, rather than wait
        for a disk that may never take them."""
        parks = set(self._parks)
        rows = self._queue.rows
        back: list[Loaded] = []
        for index, row in enumerate(rows):
            if len(back) >= room:
                break
            seq = row.seq
            if row.parked or seq in parks:
                back.append((seq, row.code, row.key, row.secondary, row.kind, row.raw, row.ip))
                rows[index] = msgspec.structs.replace(row, parked=0)
                parks.discard(seq)
        if back:
            self._parks = [seq for seq in self._parks if seq in parks]
            back.sort()
            self._load(back, None)

    def _load_work(self, limit: int) -> Callable[[], list[Loaded]]:
        writer = self._writer

        def work() -> list[Loaded]:
            assert writer.file is not None
            return writer.file.load(limit)

        return work

    def _load(self, rows: list[Loaded] | None, error: BaseException | None) -> None:
        """Rows read back (and marked resident on disk): into memory they go, in the loop's
        thread, whether or not the step that asked is still there."""
        if not rows:
            return
        ready = False
        queue = self._queue
        for row in rows:
            ready = queue.load(row) or ready
        self.loaded_seq = rows[-1][0]
        self._ledger.load(len(rows))
        self._loaded(ready)

    def _take(self) -> tuple[list[Fresh], list[int], list[int]]:
        """What to write, delete and park, taken from the lists (a row deleted before it was
        written is neither written nor deleted)."""
        queue = self._queue
        writes, queue.rows = queue.rows, []
        deletes, self._deletes = self._deletes, []
        parks, self._parks = self._parks, []
        # (rows are queued in seq order: a deletion below the first is of a row written)
        if writes and deletes and max(deletes) >= writes[0].seq:
            gone = set(deletes)
            new = {row.seq for row in writes}
            writes = [row for row in writes if row.seq not in gone]
            deletes = [seq for seq in deletes if seq not in new]
        self._writing = len(writes)
        self._taken.set()
        self._taken = anyio.Event()
        return writes, deletes, parks

    def _give_back(self, writes: list[Fresh], deletes: list[int], parks: list[int]) -> None:
        """A commit failed: its lists go back in front of what came since."""
        self._queue.rows[:0] = writes
        self._deletes[:0] = deletes
        self._parks[:0] = parks

    async def commit(self) -> None:
        """Write, park and delete what accumulated since the last commit; apply the caps.
        The commit runs to its end in the writer's thread whatever happens to this wait;
        its outcome (or, if it failed, the lists given back) is applied when it is done."""
        await self._writer.idle()
        writes, deletes, parks = self._take()
        options, writer = self.options, self._writer

        def work() -> tuple[int, int]:
            assert writer.file is not None
            cutoff = time.time() - options.max_age
            return writer.file.commit(writes, deletes, parks, options.max_bytes, cutoff)

        def then(outcome: tuple[int, int] | None, error: BaseException | None) -> None:
            self._writing = 0
            if outcome is not None:
                if writes and self.failing is not None:  # (a commit of deletions alone
                    self.failing = None  # may pass on a full disk: it proves nothing)
                    logger.warning("the spool %s is written again", options.path)
                self._committed(*outcome)
            else:
                self._give_back(writes, deletes, parks)
                if isinstance(error, sqlite3.Error):
                    self._failed(error)

        await writer.run(work, then)

    def _failed(self, error: sqlite3.Error) -> None:
        """A commit failed: say why once (at error level: calls may be dropped), then keep
        trying at each interval."""
        if self.failing is None:
            logger.error("%s", self._why(error))
        self.failing = error

    def _why(self, error: sqlite3.Error) -> str:
        path = self.options.path
        if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            cause = (
                f"the disk holding {path} is full ({error}): free space on it, or move the "
                "spool to a larger disk, or lower spool_max_bytes"
            )
        else:
            cause = f"cannot write to the spool {path} ({error}): check the file and its disk"
        return (
            f"{cause}. Until a commit works, entries wait in memory, up to {self.cap} rows; "
            "beyond, new ones are dropped (spool_full)"
        )

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
        """The last commit (leftovers are parked by now), then the writer closes the file
        and ends. Waits for it (at most :data:`CLOSE_WAIT`): after this, the file holds
        what ``spooled`` counts."""
        if self.closed:
            return
        self.closed = True
        self._taken.set()  # calls waiting for the writer stop waiting
        writer, options = self._writer, self.options
        with anyio.move_on_after(CLOSE_WAIT) as scope:
            await writer.idle()
        if scope.cancel_called:
            logger.error("the spool's writer is stuck; %s is left to it", options.path)
            writer.stop()
            return
        writes, deletes, parks = self._take()

        def work() -> tuple[int, int, int, sqlite3.Error | None]:
            file = writer.file
            assert file is not None
            cutoff = time.time() - options.max_age
            try:
                return file.last_commit(writes, deletes, parks, options.max_bytes, cutoff)
            finally:
                writer.file = None
                file.close()

        def then(
            outcome: tuple[int, int, int, sqlite3.Error | None] | None,
            error: BaseException | None,
        ) -> None:
            if outcome is None:
                logger.error("the last commit to the spool %s failed: %s", options.path, error)
                return
            full, expired, unwritten, failure = outcome
            self._committed(full, expired)
            if unwritten:
                # Never on disk: counted as dropped, so `spooled` is what the file holds.
                self._ledger.discard("spool_full", unwritten)
            if failure is not None:
                if self.failing is None:
                    logger.error("%s", self._why(failure))
                logger.error(
                    "the last commit to the spool %s failed: %d entries could not be written "
                    "and are dropped (spool_full)",
                    options.path,
                    unwritten,
                )

        with anyio.move_on_after(CLOSE_WAIT) as scope:
            await writer.run(work, then)
        if scope.cancel_called:
            logger.error(
                "the last commit to the spool %s takes longer than %gs; it goes on in its thread",
                options.path,
                CLOSE_WAIT,
            )


# Reading a spool from outside (the command line)


@dataclass(frozen=True)
class Summary:
    """What a spool holds."""

    entries: int
    bytes: int
    oldest: float | None
    people: int


def _chunk_rows(db: sqlite3.Connection) -> list[Row]:
    """The entries of the chunks on disk not recorded as settled: what the next open parks
    (with a batch settled since the last commit, if any: the run that wrote them knows)."""
    try:
        blobs = db.execute("SELECT data FROM chunks ORDER BY first").fetchall()
    except sqlite3.OperationalError:  # a file of version 1: no chunks
        return []
    return [row for (data,) in blobs for row in _unsettled(db, data)]


def inspect(path: str) -> Summary:
    """Summarise a spool without taking its lock (read only)."""
    db = _connect(path, readonly=True)
    try:
        count, oldest = db.execute("SELECT count(*), min(created) FROM entries").fetchone()
        people = set(db.execute("SELECT DISTINCT target, key FROM entries"))
        size = int(db.execute("SELECT coalesce(sum(length(raw)), 0) FROM entries").fetchone()[0])
        extra = _chunk_rows(db)
        if extra:
            count += len(extra)
            size += sum(len(row[5]) for row in extra)
            people.update((row[1], row[2]) for row in extra)
            first = min(row[6] for row in extra)
            oldest = first if oldest is None else min(oldest, first)
        return Summary(count, size, oldest, len(people))
    finally:
        db.close()


def rows(path: str) -> Iterator[tuple[str, str, str, str | None, int, bytes, str | None]]:
    """Every entry, in the order made: (field, key, secondary field, secondary, kind, raw,
    ip)."""
    db = _connect(path, readonly=True)
    try:
        extra = [
            (row[0], row[1], row[2], row[3], row[4], row[5], row[8]) for row in _chunk_rows(db)
        ]
        on_disk = db.execute(
            "SELECT seq, target, key, secondary, kind, raw, ip FROM entries ORDER BY seq"
        )
        for _, code, key, secondary, kind, raw, ip in heapq.merge(on_disk, extra):
            yield FIELDS[code], key, SECONDARY[code], secondary, kind, raw, ip
    finally:
        db.close()


def oldest(path: str) -> float | None:
    """When the oldest entry in the spool was accepted (``time.time()``), or None if it is
    empty: an indexed read of each table, no checks (for metrics, read while a client
    writes)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        found = [db.execute("SELECT created FROM entries ORDER BY seq LIMIT 1").fetchone()]
        with contextlib.suppress(sqlite3.OperationalError):  # a file of version 1
            found.append(db.execute("SELECT created FROM chunks ORDER BY first LIMIT 1").fetchone())
        times = [float(row[0]) for row in found if row is not None]
        return min(times) if times else None
    finally:
        db.close()
