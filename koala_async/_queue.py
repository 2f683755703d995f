"""Per-person (and per-account) queues, the batches cut from them, and the ready order.

No I/O and no event loop: the runtime feeds calls in and takes ready targets out.

Each person or account the client has heard from is a :class:`Target` holding its
:class:`Batch` objects in the order their entries were made. New entries go into the last
batch until it holds 30 of that kind, has been taken by a sender (sealed), or belongs to a
different e-mail (or account id), or a different visitor ``ip``, than the entry; then a new
batch is started. So every batch is, by construction, one valid request: one person, at most
30 of each kind.

A call only appends its entry to the *inbox* (:meth:`Queue.add`); the runtime files the
inbox in bulk (:meth:`Queue.intake`), so finding or starting a person's batch costs the
background, not the request handler.

A target is *ready* when one of its batches is full, when its oldest entry has waited the
flush interval (in eight age buckets, see :data:`TICKS`), on a flush, and at the close.
Ready targets wait in one FIFO; a sender takes the first and seals its first batch not in
flight (:meth:`Queue.seal`), which puts the target back at the end of the FIFO if its next
batch may go too; the sender hands the batch back settled (:meth:`Queue.done`). So a busy
person takes turns with everyone else, and has up to :data:`LANES` requests in flight, under
one rule (:meth:`Target.due`): a batch that holds an identify goes alone, once every batch
before it is settled, and nothing goes while it is in flight. A person's identifies are
applied in the order they were made, after everything made before them; events and page
views between two identifies may arrive in any order (each carries its own ``sent_at``).
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable, Iterator
from typing import Protocol

import msgspec

from . import _wire
from ._calls import EVENTS, IDENTIFIES, PAGE_VIEWS
from ._validate import Who
from ._wire import MAX_PER_KIND

__all__ = [
    "EVENTS",
    "IDENTIFIES",
    "PAGE_VIEWS",
    "Batch",
    "Item",
    "Queue",
    "Target",
    "Waiter",
    "reraise",
]

LANES = 16
"""Requests in flight for one person at most (each batch of events or page views, 30 at
most): one person's 5,000 events a second at a 50 ms round trip need about nine."""

_SLOTS = ("events", "identifies", "page_views")  # by kind
_NAMES = tuple(name.encode() for name in _SLOTS)
_ACCOUNT_FIELDS = frozenset(("domain", "account_id"))


Seqs = tuple["array[int]", "array[int]", "array[int]"]
"""With a spool: a batch's entries' row numbers in it, by kind. Arrays, not lists: the
garbage collector does not track them, and three lists for every queued batch made its
passes over a busy queue costlier (spool.py's e2e: 6% more CPU per event)."""


def new_seqs() -> Seqs:
    """No row numbers yet, for each kind."""
    return array("q"), array("q"), array("q")


class Batch:
    """Up to 30 encoded entries of each kind, bound for one request.

    Each kind's entries are kept comma-joined, ready to be written between the brackets of
    its JSON array: no object per entry, so a queued entry costs little more than its JSON.
    A kind's first entry is kept as the very ``bytes`` the call encoded (no copy); a second
    one turns it into a bytearray. Memory matters here: a busy site queues one batch per
    visitor, so the three kinds are slots rather than a list, and a target's batches are
    linked through ``next`` rather than listed.
    """

    __slots__ = (
        "counts",
        "events",
        "flying",
        "identifies",
        "ip",
        "next",
        "page_views",
        "secondary",
        "seqs",
        "size",
        "waiters",
    )

    def __init__(self, secondary: str | None = None, ip: str | None = None) -> None:
        self.events: bytes | bytearray | None = None
        self.identifies: bytes | bytearray | None = None
        self.page_views: bytes | bytearray | None = None
        self.counts = 0  # one byte per kind: (counts >> 8 * kind) & 0xFF
        self.secondary = secondary
        self.ip = ip  # the top-level ip of a person's request: one per request
        self.size = 0
        self.waiters: list[Waiter] | None = None
        self.next: Batch | None = None  # the target's next batch
        self.flying = False  # sealed: taken by a sender, until it is settled
        # With a spool: each kind's entries' row numbers in it, in the order of the entries.
        self.seqs: Seqs | None = None

    @property
    def buffers(self) -> tuple[bytes | bytearray | None, ...]:
        """Each kind's comma-joined entries, by kind."""
        return self.events, self.identifies, self.page_views

    def count(self, kind: int) -> int:
        """How many entries of ``kind`` the batch holds."""
        return (self.counts >> (kind << 3)) & 0xFF

    def append(self, kind: int, entry: bytes) -> int:
        """Add an encoded entry of ``kind``; return how many of that kind the batch holds."""
        name = _SLOTS[kind]
        buffer = getattr(self, name)
        if buffer is None:
            setattr(self, name, entry)
        else:
            if type(buffer) is bytes:
                buffer = bytearray(buffer)
                setattr(self, name, buffer)
            buffer.append(44)  # b","
            buffer += entry
        self.size += 1
        shift = kind << 3
        self.counts += 1 << shift
        return (self.counts >> shift) & 0xFF

    def entries(self) -> list[tuple[int, bytes]]:
        """The encoded entries, kind by kind, each with its kind."""
        return [
            (kind, bytes(raw))
            for kind, buffer in enumerate(self.buffers)
            if buffer
            for raw in _split(b"[" + buffer + b"]")
        ]

    def halves(self) -> tuple[Batch, Batch]:
        """Split into two smaller batches (for a 413), keeping each kind's order; flush
        waiters wait for both halves."""
        items = self.entries()
        middle = len(items) // 2
        halves = Batch(self.secondary, self.ip), Batch(self.secondary, self.ip)
        for i, (kind, entry) in enumerate(items):
            halves[i >= middle].append(kind, entry)
        if self.seqs is not None:  # entries() goes kind by kind: so do the seqs
            for i, seq in enumerate(s for seqs in self.seqs for s in seqs):
                half = halves[i >= middle]
                half.seqs = half.seqs or new_seqs()
                half.seqs[items[i][0]].append(seq)
        for waiter in self.waiters or ():
            waiter.left -= 1
            waiter.add(halves[0])
            waiter.add(halves[1])
        return halves


_split = msgspec.json.Decoder(list[msgspec.Raw]).decode


def _full(batch: Batch) -> bool:
    """Whether one of the batch's kinds holds 30: the batch is due, even while still open."""
    return any(batch.count(kind) >= MAX_PER_KIND for kind in range(len(_SLOTS)))


class Waiter:
    """Counts down the batches a ``flush()`` waits for; ``done`` is set when none are left."""

    __slots__ = ("done", "left")

    def __init__(self, done: _Settable) -> None:
        self.left = 0
        self.done = done

    def add(self, batch: Batch) -> None:
        if batch.waiters is None:
            batch.waiters = [self]
        else:
            batch.waiters.append(self)
        self.left += 1


class _Settable(Protocol):
    def set(self) -> None: ...


class Target:
    """One person (``/batch``) or account (``/accounts/batch``) and its queued batches.

    ``field`` and ``key`` say what the queue is keyed by (profile_id, else email; domain,
    else account_id); ``secondary_name`` is the other id field, whose value may differ from
    batch to batch. The batches are a linked list from ``head``, oldest first; new entries
    join ``open``, the newest, until it is sealed.
    """

    __slots__ = (
        "field",
        "flying",
        "head",
        "key",
        "open",
        "scheduled",
        "secondary_name",
        "waits",
    )

    def __init__(self, field: str, key: str, secondary_name: str) -> None:
        self.field = field
        self.key = key
        self.secondary_name = secondary_name
        self.head: Batch | None = None  # the oldest batch: the next to send
        self.open: Batch | None = None  # the batch new entries join; None once it is sealed
        self.scheduled = False  # waiting in the ready FIFO
        self.waits = False  # in one of the queue's age buckets
        self.flying = 0  # batches sealed and not yet settled

    @property
    def account(self) -> bool:
        return self.field in _ACCOUNT_FIELDS

    def batches(self) -> Iterator[Batch]:
        """The queued batches, oldest first."""
        batch = self.head
        while batch is not None:
            yield batch
            batch = batch.next

    def last(self) -> Batch | None:
        """The newest batch: the one the latest entry joined."""
        if self.open is not None:
            return self.open
        batch = self.head  # all sealed: one in flight, or the halves of one
        while batch is not None and batch.next is not None:
            batch = batch.next
        return batch

    def start(self, secondary: str | None, ip: str | None) -> Batch:
        batch = Batch(secondary, ip)
        last = self.last()
        if last is None:
            self.head = batch
        else:
            last.next = batch
        self.open = batch
        return batch

    def seal(self) -> Batch | None:
        """Take the first batch not in flight for sending (None: there is none); no entry
        joins it after this. Whether it may go is :meth:`due`'s to say."""
        batch = self.head
        while batch is not None and batch.flying:
            batch = batch.next
        if batch is None:
            return None
        batch.flying = True
        self.flying += 1
        if self.open is batch:
            self.open = None
        return batch

    def due(self, aged: bool) -> bool | None:
        """Whether the first batch not in flight may go now; None if there is none. It may
        when it is full, or no longer the one entries join, or a flush waits for it, or it
        is ``aged`` (or everything is due), and the lanes let it: fewer than :data:`LANES`
        in flight, and, if any is, neither it nor one in flight holds an identify."""
        batch = self.head
        carrying = False  # an identify is in flight
        while batch is not None and batch.flying:
            carrying = carrying or batch.count(IDENTIFIES) > 0
            batch = batch.next
        if batch is None:
            return None
        if self.flying and (self.flying >= LANES or carrying or batch.count(IDENTIFIES)):
            return False
        return aged or batch is not self.open or _full(batch) or bool(batch.waiters)

    def remove(self, batch: Batch) -> None:
        """Unlink a batch that was settled (or parked): sealed, so never the open one."""
        if batch.flying:
            batch.flying = False
            self.flying -= 1
        if self.head is batch:
            self.head = batch.next
        else:
            before = self.head
            while before is not None and before.next is not batch:
                before = before.next
            if before is not None:
                before.next = batch.next

    def split(self, batch: Batch) -> None:
        """Split a sealed batch for a 413: it keeps its first half (and stays in flight),
        and its second half, not in flight, follows it."""
        first, second = batch.halves()
        batch.events, batch.identifies, batch.page_views = first.buffers
        batch.counts, batch.size, batch.seqs = first.counts, first.size, first.seqs
        batch.waiters = first.waiters
        second.next, batch.next = batch.next, second

    def cut(self) -> Iterator[Batch]:
        """Unlink every batch not in flight (what must follow a parked batch to disk);
        yield them, oldest first."""
        kept: list[Batch] = []
        later: list[Batch] = []
        batch = self.head
        while batch is not None:
            (kept if batch.flying else later).append(batch)
            batch = batch.next
        self.head = None
        for batch in reversed(kept):
            batch.next, self.head = self.head, batch
        self.open = None
        for batch in later:
            batch.next = None
        return iter(later)

    def body(self, batch: Batch) -> bytes:
        """The JSON request body for one of this target's batches."""
        head = _wire.head(
            ((self.field, self.key), (self.secondary_name, batch.secondary), ("ip", batch.ip))
        )
        return _wire.body(head, tuple(zip(_NAMES, batch.buffers, strict=True)))

    def ids(self, batch: Batch) -> dict[str, str]:
        """The top-level id fields of a batch, as a dict."""
        ids = {self.field: self.key}
        if batch.secondary is not None:
            ids[self.secondary_name] = batch.secondary
        if batch.ip is not None:
            ids["ip"] = batch.ip
        return ids


Item = tuple[int, bytes, Who, "str | None", "str | None"]
"""An entry as a call leaves it in the inbox: kind, encoded entry, target, top-level ip, and
its ``message_id`` (what the call returns; the queue has no use for it). One tuple from the
intake to the inbox: the hot path neither unpacks nor repacks it."""


def reraise(error: Exception, item: Item) -> None:
    """What a queue does with an entry it could not file, unless told otherwise: raise."""
    raise error


TICKS = 8
"""Age buckets per flush interval: a waiting entry is sent after 7/8 to 8/8 of it, so the
batches of a busy site go out in eight small waves a second rather than one big one."""
FILE_EVERY = 64
"""Entries in the inbox that have it filed at the loop's next turn (the engine's hot path
and the runtime both read it; here, so that the engine need not import the runtime)."""
MAX_BLOCK = 0.05
"""Seconds a call with ``on_full="pace"`` waits for room at most (Kafka's ``max.block.ms``
idea, in a request handler's scale); then its entry is dropped as ``queue_full``."""


class Queue:
    """Every queued target, the FIFO of those ready to be sent, and the age buckets of
    those still filling."""

    __slots__ = ("buckets", "eager", "inbox", "on_unfiled", "ready", "targets")

    def __init__(self, on_unfiled: Callable[[Exception, Item], None] = reraise) -> None:
        # Entries a call added and nobody has filed yet (see :meth:`add`).
        self.inbox: list[Item] = []
        # Told why an entry could not be filed (a bug): the engine counts and logs it.
        self.on_unfiled = on_unfiled
        # Targets by the field they are keyed by, so ids of different kinds never collide.
        self.targets: dict[str, dict[str, Target]] = {
            field: {} for field in ("profile_id", "email", "domain", "account_id")
        }
        # Targets with entries that are not ready yet, newest bucket last.
        self.buckets: deque[list[Target]] = deque([[] for _ in range(TICKS)])
        self.ready: deque[Target] = deque()
        self.eager = False  # closing: every batch goes as soon as a sender is free

    def add(self, kind: int, entry: bytes, who: Who, ip: str | None = None) -> int:
        """Take an encoded entry now, to be filed into its target's batch at :meth:`intake`;
        return how many entries wait to be filed, this one included.

        A call pays for a list append, not for finding its person's batch: the runtime files
        the inbox in bulk (every 50 ms, at each tick, and soon after it has grown by 64).
        Every method that reads what is queued files the inbox first.
        """
        inbox = self.inbox
        inbox.append((kind, entry, who, ip, None))
        return len(inbox)

    def intake(self) -> int:
        """File the inbox's entries, in the order they came; return how many targets became
        ready. An entry whose filing raises (a bug) is left out and its error given to
        :attr:`on_unfiled`, wherever the filing happens: the rest are filed."""
        inbox, self.inbox = self.inbox, []
        put = self.put
        ready = 0
        for kind, entry, who, ip, message_id in inbox:
            try:
                ready += put(kind, entry, who, ip)
            except Exception as exc:  # a bug; the try itself costs nothing in 3.11
                self.on_unfiled(exc, (kind, entry, who, ip, message_id))
        return ready

    def put(self, kind: int, entry: bytes, who: Who, ip: str | None = None) -> bool:
        """File an encoded entry (``ip``: a person's, sent top-level) into its target's
        batch now; return True when its target just became ready.

        The entry joins the target's open batch unless that holds 30 of its kind, or has
        another e-mail (or account id) or ip than the entry: a request carries one of each.
        """
        field, key, secondary_name, secondary = who
        targets = self.targets[field]
        target = targets.get(key)
        if target is None:
            target = targets[key] = Target(field, key, secondary_name)
        batch = target.open
        if (
            batch is None
            or (batch.counts >> (kind << 3)) & 0xFF >= MAX_PER_KIND  # count(kind), inline
            or (secondary is not None and batch.secondary not in (None, secondary))
            or (ip is not None and batch.ip not in (None, ip))
        ):
            batch = target.start(secondary, ip)
        else:  # an entry without an email (or ip) joins a batch with one
            if secondary is not None:
                batch.secondary = secondary
            if ip is not None:
                batch.ip = ip
        if batch.append(kind, entry) == MAX_PER_KIND:
            return self._place(target)
        if not target.scheduled and not target.waits:
            target.waits = True
            self.buckets[-1].append(target)
        return False

    def tick(self) -> int:
        """An eighth of the flush interval passed: make the oldest bucket's targets ready.
        Returns how many became ready. The inbox is filed first: its entries were made
        during the eighth that just ended, the newest bucket's."""
        ready = self.intake() if self.inbox else 0
        buckets = self.buckets
        oldest = buckets.popleft()
        buckets.append([])
        return ready + self._schedule(oldest)

    def schedule_waiting(self) -> int:
        """Make every target with queued entries ready (a flush, the close)."""
        ready = self.intake() if self.inbox else 0
        for bucket in self.buckets:
            ready += self._schedule(bucket)
            bucket.clear()
        return ready

    def _schedule(self, bucket: list[Target]) -> int:
        ready = 0
        for target in bucket:
            target.waits = False
            ready += self._place(target, aged=True)
        return ready

    def _place(self, target: Target, aged: bool = False) -> bool:
        """Put a target where its next batch waits: at the end of the FIFO if it may go now
        (see :meth:`Target.due`), in the newest age bucket while it fills. True when it
        became ready. One the lanes hold back is placed again as a flight ends (never put
        back in a bucket while the buckets are being emptied)."""
        if target.scheduled:
            return False
        due = target.due(aged or self.eager)
        if due:
            target.scheduled = True
            self.ready.append(target)
            return True
        if due is False and not aged and not target.waits:  # aged: the lanes hold it back
            target.waits = True
            self.buckets[-1].append(target)
        return False

    def take(self) -> Target | None:
        """The first ready target, or None."""
        if not self.ready:
            return None
        target = self.ready.popleft()
        target.scheduled = False
        return target

    def seal(self, target: Target) -> Batch | None:
        """Seal ``target``'s next batch for the sender that took it (None: nothing is left
        to send, e.g. it went to the spool meanwhile), and put the target back in the FIFO
        if its next batch may go too."""
        batch = target.seal()
        if batch is None:
            self._forget(target)
            return None
        self._place(target)
        return batch

    def done(self, target: Target, batch: Batch) -> None:
        """A sender settled ``batch``: place the target for its next batch (the FIFO if it
        is due, an age bucket if it is still filling), or forget it if nothing is left."""
        target.remove(batch)
        if target.head is not None:
            self._place(target)
        else:
            self._forget(target)

    def _forget(self, target: Target) -> None:
        if target.head is None and not target.flying and not target.scheduled:
            targets = self.targets[target.field]
            if targets.get(target.key) is target:
                del targets[target.key]

    def batches(self) -> Iterator[tuple[Target, Batch]]:
        """Every queued batch (in flight included), with its target."""
        if self.inbox:
            self.intake()
        for targets in self.targets.values():
            for target in targets.values():
                for batch in target.batches():
                    yield target, batch

    def clear(self) -> None:
        self.inbox.clear()
        for targets in self.targets.values():
            targets.clear()
        for bucket in self.buckets:
            bucket.clear()
        self.ready.clear()
