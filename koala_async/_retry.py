"""When to retry a request and how long to wait: pure functions over a :class:`RetryPolicy`.

Waits come from backoff's generators (exponential, full jitter); the client sleeps with
``anyio.sleep`` so retries work on trio as well as asyncio.
"""

from __future__ import annotations

import email.utils
import enum
import time
from collections.abc import Iterator

import backoff
import msgspec

__all__ = ["RetryPolicy", "Verdict", "classify", "retry_after"]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How hard the client tries to deliver a batch before dropping it.

    Args:
        max_attempts: Attempts per batch, the first included. Waits imposed by a 429's
            ``Retry-After`` do not use attempts up.
        budget: Seconds a batch may spend retrying, counted from its first attempt.
        backoff: Base wait of the exponential backoff, in seconds; each wait is drawn
            uniformly between 0 and ``backoff * 2**retry`` (full jitter). 0 never waits,
            which is what tests want.
        max_backoff: Cap on one backoff wait, in seconds.
        max_retry_after: Cap on a server's ``Retry-After``, in seconds.
    """

    max_attempts: int = 10
    budget: float = 120.0
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if min(self.budget, self.backoff, self.max_backoff, self.max_retry_after) < 0:
            raise ValueError("RetryPolicy durations must not be negative")

    def waits(self) -> Iterator[float]:
        """Yield the successive backoff waits for one batch."""
        waits = backoff.expo(factor=self.backoff, max_value=self.max_backoff)
        next(waits)  # backoff's generators are primed before use
        for wait in waits:
            yield backoff.full_jitter(wait) if wait else 0.0


class Verdict(enum.Enum):
    """What a response means for the batch that was sent."""

    DELIVERED = "delivered"
    RETRY = "retry"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    REJECTED = "rejected"
    UNAUTHORIZED = "unauthorized"
    SUSPENDED = "suspended"


def classify(status: int, content: bytes) -> Verdict:
    """Judge an HTTP response: any 2xx is accepted, whatever its body says."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status == 429:
        return Verdict.RATE_LIMITED
    if status == 408 or (500 <= status < 600 and status not in (501, 505)):
        return Verdict.RETRY
    if status == 413:
        return Verdict.TOO_LARGE
    if status == 401:
        return Verdict.UNAUTHORIZED
    if status == 400 and b"suspended" in content.lower():
        return Verdict.SUSPENDED
    return Verdict.REJECTED


def retry_after(value: str | None, cap: float) -> float | None:
    """Parse a ``Retry-After`` header (seconds or an HTTP date) into seconds, capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap)
