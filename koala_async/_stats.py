"""What the client reports: counters, flush results and failed batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

__all__ = ["DROP_REASONS", "DeliveryFailure", "FlushResult", "Stats"]

DropReason = Literal[
    "queue_full",
    "rejected",
    "too_large",
    "unauthorized",
    "gone",
    "retries_exhausted",
    "shutdown_timeout",
    "invalid",
    "closed",
    "filtered",
    "spool_full",
    "expired",
]
DROP_REASONS: tuple[DropReason, ...] = DropReason.__args__  # type: ignore[attr-defined]


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    """A consistent snapshot of the client's counters.

    ``accepted == delivered + sum(dropped.values()) + pending`` always holds: every entry a
    call accepted is delivered, dropped for a reason, or still pending.

    Attributes:
        accepted: Entries accepted by calls (valid input), including those later dropped.
        delivered: Entries in requests Koala answered with a 2xx.
        dropped: Entries given up, by reason (every reason is present, most at 0).
        pending: Entries queued or in flight.
        requests: HTTP requests made, retries included.
        retries: Requests that were retries of an earlier attempt.
        last_error: The most recent delivery problem, or None.
        circuit: The endpoint's state: ``"closed"`` (healthy), ``"open"`` (requests are
            failing; one probe at a time tests it) or ``"dead"`` (the key is refused or the
            endpoint is not Koala's; nothing more is sent).
        concurrency: Requests that may be in flight now (the adaptive limit).
        spooled: Of ``pending``, the entries waiting on disk only, in the spool (0 without one).
        recovered: Entries this client found in its spool at open, left by an earlier run
            (counted in ``accepted`` too).
        capacity: The most entries memory may hold, queued or in flight
            (``max_queue_size``): ``pending - spooled`` never exceeds it.
        in_flight: HTTP requests sent and not yet answered.
        request_seconds: Seconds all requests took, summed from send to answer (divide by
            ``requests`` for the mean).
    """

    accepted: int
    delivered: int
    dropped: dict[str, int]
    pending: int
    requests: int
    retries: int
    last_error: str | None
    circuit: str = "closed"
    concurrency: int = 0
    spooled: int = 0
    recovered: int = 0
    capacity: int = 0
    in_flight: int = 0
    request_seconds: float = 0.0

    @property
    def dropped_total(self) -> int:
        """All dropped entries, whatever the reason."""
        return sum(self.dropped.values())


class FlushResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a ``flush()`` or ``aclose()`` achieved.

    Attributes:
        delivered: Entries delivered while it ran.
        dropped: Entries given up while it ran.
        pending: Entries still queued or in flight when it returned (0 after a clean close
            without a spool; with one, what waits in the spool for the next run).
        spooled: Of ``pending``, the entries waiting on disk only, in the spool.
    """

    delivered: int
    dropped: int
    pending: int
    spooled: int = 0


@dataclass(frozen=True)
class DeliveryFailure:
    """A batch the client gave up on, handed to ``on_error``.

    Attributes:
        reason: One of the drop reasons counted in :attr:`Stats.dropped`. ``"invalid"`` and
            ``"closed"`` are calls refused at the call (no ``strict``): their ``entries``
            are empty, ``ids`` holds the id arguments that were strings, and ``exception``
            is the :class:`ValidationError` or :class:`ClientClosedError` that says why.
        kind: ``"profile"`` (sent to ``/batch``) or ``"account"`` (``/accounts/batch``).
        ids: The batch's top-level id fields: profile_id and/or email, or domain and/or
            account_id.
        entries: The entries as they would have been sent, each with its ``type``.
        status: The HTTP status of the last response, if there was one.
        exception: The last transport error, if that is what ended it.
    """

    reason: DropReason
    kind: Literal["profile", "account"]
    ids: dict[str, str]
    entries: list[dict[str, Any]]
    status: int | None = None
    exception: BaseException | None = None
