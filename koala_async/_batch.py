"""Per-person (and per-account) queues and the batches cut from them: no I/O, no event loop.

Each person or account the client has heard from is a :class:`Target` holding a deque of
:class:`Batch` objects in the order their entries were made. New entries go into the last
batch until it holds 30 of that kind, has been taken by a sender (sealed), or belongs to a
different e-mail (or account id) than the entry; then a new batch is started. So every batch
is, by construction, one valid request: one person, at most 30 of each kind.
"""

from __future__ import annotations

from collections import deque

from . import _wire
from ._wire import MAX_PER_KIND

__all__ = ["EVENTS", "IDENTIFIES", "PAGE_VIEWS", "Batch", "Target"]

EVENTS, IDENTIFIES, PAGE_VIEWS = 0, 1, 2
_NAMES = (b"events", b"identifies", b"page_views")


class Batch:
    """Up to 30 encoded entries of each kind, bound for one request."""

    __slots__ = ("lists", "sealed", "secondary", "size", "waiters")

    def __init__(self) -> None:
        self.lists: tuple[list[bytes], list[bytes], list[bytes]] = ([], [], [])
        self.secondary: str | None = None
        self.sealed = False
        self.size = 0
        self.waiters: list[Waiter] | None = None

    def entries(self) -> list[bytes]:
        """The encoded entries, kind by kind."""
        return [entry for entries in self.lists for entry in entries]

    def halves(self) -> tuple[Batch, Batch]:
        """Split into two smaller batches (for a 413), keeping each kind's order."""
        items = [(kind, e) for kind, entries in enumerate(self.lists) for e in entries]
        middle = len(items) // 2
        halves = Batch(), Batch()
        for i, (kind, entry) in enumerate(items):
            half = halves[i >= middle]
            half.lists[kind].append(entry)
            half.size += 1
        for half in halves:
            half.secondary = self.secondary
            half.sealed = True
        return halves


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

    __slots__ = ("account", "batches", "head", "key", "primary", "scheduled", "secondary_name")

    def __init__(
        self, key: str, account: bool, primary: tuple[str, str], secondary_name: str
    ) -> None:
        self.key = key
        self.account = account
        self.primary = primary
        self.head = _wire.head((primary,))
        self.secondary_name = secondary_name
        self.batches: deque[Batch] = deque()
        self.scheduled = False  # waiting in the ready queue, or being sent

    def add(self, kind: int, entry: bytes, secondary: str | None) -> bool:
        """Queue an encoded entry; return True when its batch just became full."""
        batches = self.batches
        batch = batches[-1] if batches else None
        if (
            batch is None
            or batch.sealed
            or len(batch.lists[kind]) >= MAX_PER_KIND
            or (secondary is not None and batch.secondary not in (None, secondary))
        ):
            batch = Batch()
            batches.append(batch)
        if secondary is not None:
            batch.secondary = secondary
        entries = batch.lists[kind]
        entries.append(entry)
        batch.size += 1
        return len(entries) == MAX_PER_KIND

    def body(self, batch: Batch) -> bytes:
        """The JSON request body for one of this target's batches."""
        head = self.head
        if batch.secondary is not None:
            head += b"," + _wire.head(((self.secondary_name, batch.secondary),))
        return _wire.body(head, tuple(zip(_NAMES, batch.lists, strict=True)))

    def ids(self, batch: Batch) -> dict[str, str]:
        """The top-level id fields of a batch, as a dict."""
        ids = dict((self.primary,))
        if batch.secondary is not None:
            ids[self.secondary_name] = batch.secondary
        return ids
