"""The counters, and the one place that keeps ``accepted == delivered + dropped + pending``.

Nothing else writes a counter: calls report what they accepted or refused, senders what
became of each batch. ``accepted`` is not stored but summed, so the invariant holds by
construction, whatever the order of events. Pure: no I/O, no event loop.
"""

from __future__ import annotations

from ._queue import Batch
from ._stats import DROP_REASONS, DropReason

__all__ = ["Ledger"]


class Ledger:
    """What became of every entry a call accepted."""

    __slots__ = (
        "delivered",
        "dropped",
        "dropped_total",
        "pending",
        "recovered",
        "request_seconds",
        "requests",
        "retries",
        "spooled",
    )

    def __init__(self) -> None:
        self.delivered = 0
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.dropped_total = 0
        self.pending = 0  # queued or in flight (in memory)
        self.spooled = 0  # waiting on disk only, in the spool
        self.recovered = 0  # found in the spool at open
        self.requests = 0
        self.retries = 0
        self.request_seconds = 0.0  # summed from send to answer

    @property
    def accepted(self) -> int:
        return self.delivered + self.dropped_total + self.pending + self.spooled

    def accept(self) -> None:
        """A call queued an entry."""
        self.pending += 1

    def refuse(self, reason: DropReason) -> None:
        """A call's entry was dropped at once (accepted and dropped in one step)."""
        self.dropped[reason] += 1
        self.dropped_total += 1

    def lose(self, reason: DropReason) -> None:
        """A queued entry was dropped on its own, outside any batch."""
        self.pending -= 1
        self.refuse(reason)

    def settle(self, batch: Batch, reason: DropReason | None) -> None:
        """A batch was delivered (``reason`` None) or given up; wake the flushes waiting on it."""
        size = batch.size
        batch.size = 0  # settled once, whatever happens to the object later
        self.pending -= size
        if reason is None:
            self.delivered += size
        else:
            self.dropped[reason] += size
            self.dropped_total += size
        for waiter in batch.waiters or ():
            waiter.left -= 1
            if not waiter.left:
                waiter.done.set()

    # The spool's movements: between memory and disk, never lost on the way.

    def recover(self, count: int) -> None:
        """The spool held ``count`` entries of an earlier run at open."""
        self.spooled += count
        self.recovered += count

    def spill(self) -> None:
        """A call's entry went to the spool only (memory was full, or others wait there)."""
        self.spooled += 1

    def load(self, count: int) -> None:
        """``count`` entries were read back from the spool into memory."""
        self.spooled -= count
        self.pending += count

    def release(self, batch: Batch) -> None:
        """A batch goes back to waiting on disk (retries exhausted, or shutdown); wake the
        flushes waiting on it, as for an outcome."""
        size = batch.size
        batch.size = 0
        self.pending -= size
        self.spooled += size
        for waiter in batch.waiters or ():
            waiter.left -= 1
            if not waiter.left:
                waiter.done.set()

    def discard(self, reason: DropReason, count: int) -> None:
        """The spool dropped ``count`` of its entries (``spool_full``, ``expired``)."""
        self.spooled -= count
        self.dropped[reason] += count
        self.dropped_total += count
