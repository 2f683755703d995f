"""Per-person (and per-account) queues and the batches cut from them: no I/O, no event loop.

Each person or account the client has heard from is a :class:`Target` holding a deque of
:class:`Batch` objects in the order their entries were made. New entries go into the last
batch until it holds 30 of that kind, has been taken by a sender (sealed), or belongs to a
different e-mail (or account id) than the entry; then a new batch is started. So every batch
is, by construction, one valid request: one person, at most 30 of each kind.
"""

from __future__ import annotations

from collections import deque

import msgspec

from . import _wire
from ._wire import MAX_PER_KIND

__all__ = ["EVENTS", "IDENTIFIES", "PAGE_VIEWS", "Batch", "Target"]

EVENTS, IDENTIFIES, PAGE_VIEWS = 0, 1, 2
_NAMES = (b"events", b"identifies", b"page_views")


class Batch:
    """Up to 30 encoded entries of each kind, bound for one request.

    Each kind's entries are kept comma-joined in one bytearray, ready to be written between
    the brackets of its JSON array: no object per entry, so a queued entry costs little more
    than its JSON.
    """

    __slots__ = ("buffers", "counts", "secondary", "size", "waiters")

    def __init__(self) -> None:
        self.buffers = (bytearray(), bytearray(), bytearray())
        self.counts = [0, 0, 0]
        self.secondary: str | None = None
        self.size = 0
        self.waiters: list[Waiter] | None = None

    def append(self, kind: int, entry: bytes) -> int:
        """Add an encoded entry of ``kind``; return how many of that kind the batch holds."""
        buffer = self.buffers[kind]
        if buffer:
            buffer.append(44)  # b","
        buffer += entry
        self.size += 1
        counts = self.counts
        count = counts[kind] = counts[kind] + 1
        return count

    def entries(self) -> list[tuple[int, bytes]]:
        """The encoded entries, kind by kind, each with its kind."""
        return [
            (kind, bytes(raw))
            for kind, buffer in enumerate(self.buffers)
            if buffer
            for raw in _split(b"[" + buffer + b"]")
        ]

    def halves(self) -> tuple[Batch, Batch]:
        """Split into two smaller batches (for a 413), keeping each kind's order."""
        items = self.entries()
        middle = len(items) // 2
        halves = Batch(), Batch()
        for i, (kind, entry) in enumerate(items):
            halves[i >= middle].append(kind, entry)
        for half in halves:
            half.secondary = self.secondary
        return halves


_split = msgspec.json.Decoder(list[msgspec.Raw]).decode


class Waiter:
    """Counts down the batches a ``flush()`` waits for."""

    __slots__ = ("done", "left")

    def __init__(self) -> None:
        self.left = 0
        self.done: object = None  # an anyio.Event, set by the client

    def add(self, batch: Batch) -> None:
        if batch.waiters is None:
            batch.waiters = [self]
        else:
            batch.waiters.append(self)
        self.left += 1


class Target:
    """One person (``/batch``) or account (``/accounts/batch``) and its queued batches.

    ``primary`` is the field the queue is keyed by (profile_id, else email; domain, else
    account_id); ``secondary`` is the other id field, which may differ from batch to batch.
    """

    __slots__ = (
        "account",
        "batches",
        "key",
        "open",
        "primary",
        "scheduled",
        "secondary_name",
    )

    def __init__(self, primary: tuple[str, str], secondary_name: str, account: bool) -> None:
        self.key = primary[1]
        self.account = account
        self.primary = primary
        self.secondary_name = secondary_name
        self.batches: deque[Batch] = deque()
        self.open: Batch | None = None  # the batch new entries join; None once it is sealed
        self.scheduled = False  # waiting in the ready queue, or being sent

    def add(self, kind: int, entry: bytes, secondary: str | None) -> bool:
        """Queue an encoded entry; return True when its batch just became full."""
        batch = self.open
        if (
            batch is None
            or batch.counts[kind] >= MAX_PER_KIND
            or (secondary is not None and batch.secondary not in (None, secondary))
        ):
            batch = self.open = Batch()
            self.batches.append(batch)
        if secondary is not None:
            batch.secondary = secondary
        return batch.append(kind, entry) == MAX_PER_KIND

    def seal(self) -> Batch:
        """Take the first batch for sending; no entry joins it after this."""
        batch = self.batches[0]
        if self.open is batch:
            self.open = None
        return batch

    def body(self, batch: Batch) -> bytes:
        """The JSON request body for one of this target's batches."""
        head = _wire.head((self.primary, (self.secondary_name, batch.secondary)))
        return _wire.body(head, tuple(zip(_NAMES, batch.buffers, strict=True)))

    def ids(self, batch: Batch) -> dict[str, str]:
        """The top-level id fields of a batch, as a dict."""
        ids = dict((self.primary,))
        if batch.secondary is not None:
            ids[self.secondary_name] = batch.secondary
        return ids
