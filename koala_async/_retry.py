"""What an answer means and how long to wait before the next try: pure, no I/O.

:func:`classify` judges one answer (a status, or a transport error); a :class:`Tries` holds one
batch's retry state and says how long to wait, or that the batch is given up. The client only
sleeps what these decide, so every rule here is tested without a server or an event loop.

Rules worth knowing:

- A server's ``Retry-After`` is a lower bound on our wait, never a reason to give up or to
  hurry: ``0`` or a date in the past still waits our own backoff, and a long one is capped
  at ``max_retry_after`` rather than dropping the batch.
- A rate limit (429) holds the batch that met it at least :data:`RATE_LIMIT_FLOOR`, doubling
  while its 429s keep coming, so a ``Retry-After: 0`` cannot make a storm; other batches
  only keep to the rate the server accepts (:class:`~koala_async._limiter.Pacer`).
- The backoff's schedule is the ``backoff`` package's ``expo`` with ``full_jitter``,
  imported at the first retry (it imports asyncio: ~16 ms that ``import koala_async`` need
  not pay).
- Waits imposed by the server (429, ``Retry-After``) use neither attempts nor the batch's
  ``budget``: the server asked us to wait, so waiting is not failing.
"""

from __future__ import annotations

import enum
import math
import sys
import time
from collections.abc import Callable, Iterator

import msgspec

from ._exceptions import ValidationError

__all__ = [
    "RATE_LIMIT_FLOOR",
    "RetryPolicy",
    "Tries",
    "Verdict",
    "classify",
    "full_jitter",
    "overloads",
    "retry_after",
    "timed_out",
]

RATE_LIMIT_FLOOR = 0.1
"""The least a 429 waits, in seconds, whatever ``Retry-After`` and ``backoff`` say."""


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How hard the client tries to deliver a batch before dropping it.

    Args:
        max_attempts: Attempts per batch, the first included. Waits a server imposes (429,
            ``Retry-After``) and waits while the endpoint is down (see the circuit in the
            README) do not use attempts up.
        budget: Seconds a batch may spend failing and backing off, from its first attempt;
            waits the server imposes are not counted.
        backoff: Base wait of the exponential backoff, in seconds; each wait is drawn
            uniformly between 0 and ``backoff * 2**retry`` (full jitter). 0 never waits on
            errors, which is what tests want (rate limits still wait a short floor).
        max_backoff: Cap on one backoff wait, in seconds.
        max_retry_after: Cap on a server's ``Retry-After``, in seconds.

    Raises:
        ValidationError: A field has the wrong type or an impossible value.
    """

    max_attempts: int = 10
    budget: float = 120.0
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if type(self.max_attempts) is not int or self.max_attempts < 1:
            raise ValidationError(
                f"RetryPolicy.max_attempts must be a whole number of at least 1, "
                f"got {self.max_attempts!r}"
            )
        for name in ("budget", "backoff", "max_backoff", "max_retry_after"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not value >= 0:
                raise ValidationError(
                    f"RetryPolicy.{name} must be a number of seconds, 0 or more, got {value!r}"
                )

    def ceilings(self) -> Iterator[float]:
        """The backoff's ceilings, retry by retry: ``backoff * 2**retry`` up to
        ``max_backoff`` (the ``backoff`` package's ``expo``)."""
        import backoff

        waits = backoff.expo(base=2, factor=self.backoff, max_value=min(self.max_backoff, _YEAR))
        next(waits)  # expo is a coroutine-style generator: its first value is None
        return waits

    def backoff_wait(self, retry: int) -> float:
        """The jittered wait before retry number ``retry`` (0 for the first retry)."""
        ceilings = self.ceilings()
        for _ in range(retry):
            next(ceilings)
        return full_jitter(next(ceilings))


_YEAR = 365 * 86400.0  # expo's values stay floats: 2**1024 would not


def full_jitter(ceiling: float) -> float:
    """A uniform draw between 0 and ``ceiling``: the ``backoff`` package's ``full_jitter``."""
    import backoff

    return float(backoff.full_jitter(ceiling))


class Verdict(enum.Enum):
    """What one answer (or failure to get one) means."""

    DELIVERED = "delivered"  # any 2xx
    RETRY = "retry"  # 408, 5xx but 501/505, a timeout: the server may do better later
    UNREACHABLE = "unreachable"  # no connection at all: refused, DNS, reset on connect
    RATE_LIMITED = "rate_limited"  # 429
    TOO_LARGE = "too_large"  # 413: split the batch
    REJECTED = "rejected"  # other 4xx: this batch will never be taken
    UNAUTHORIZED = "unauthorized"  # 401, 403: the key is refused (confirmed before it is final)
    GONE = "gone"  # 404, 410, or a TLS certificate error: the endpoint is not Koala's


FATAL = frozenset((Verdict.UNAUTHORIZED, Verdict.GONE))


def classify(status: int) -> Verdict:
    """Judge an HTTP status: any 2xx is accepted, whatever the body says."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status == 429:
        return Verdict.RATE_LIMITED
    if status == 408 or (500 <= status < 600 and status not in (501, 505)):
        return Verdict.RETRY
    if status == 413:
        return Verdict.TOO_LARGE
    if status in (401, 403):
        return Verdict.UNAUTHORIZED
    if status in (404, 410):
        return Verdict.GONE
    return Verdict.REJECTED


_OVERLOAD = frozenset((408, 502, 503, 504))


def overloads(status: int | None) -> bool:
    """Does a failed answer say the server may have more than it can take? A 408, 502, 503
    or 504 may; a 500 (or another 5xx) says that this request failed. The limiter cuts on
    overload answers only when they are most of a round trip's (see :mod:`._limiter`);
    a 429 is the pacer's, not the limiter's."""
    return status in _OVERLOAD


def timed_out(error: BaseException | None) -> bool:
    """Was the failure a timeout (no complete answer in time)? A reset is not."""
    return isinstance(error, TimeoutError) or type(error).__name__.endswith("Timeout")


def classify_error(error: BaseException) -> Verdict:
    """Judge a failure to get an answer: a TLS certificate error, or an error marked ``gone``
    (a redirect, TLS and plain HTTP crossed), means the endpoint is not the one we were told
    of; no connection at all means it is unreachable (for now)."""
    ssl = sys.modules.get("ssl")  # not imported: no TLS error can have happened
    bad_certificate = () if ssl is None else ssl.SSLCertVerificationError
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:  # httpx wraps the OS error
        seen.add(id(cause))
        if isinstance(cause, bad_certificate) or getattr(cause, "gone", False):
            return Verdict.GONE  # not the endpoint we were told of, or misconfigured
        cause = cause.__cause__ or cause.__context__
    name = type(error).__name__
    if name in ("ConnectError", "ConnectTimeout"):
        return Verdict.UNREACHABLE
    return Verdict.RETRY


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header (seconds or an HTTP date) into seconds from now, or None
    when it is absent or unreadable. A past date is 0."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        import email.utils  # ~8 ms to import; an HTTP-date Retry-After is rare

        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


class Tries:
    """One batch's retry state: how many attempts it used and how much of its budget.

    Feed it what each attempt met; it answers with the seconds to wait before the next, or
    None when the batch should be given up.
    """

    __slots__ = ("_ceilings", "_jitter", "attempts", "policy", "spent")

    def __init__(self, policy: RetryPolicy, jitter: Callable[[float], float] = full_jitter) -> None:
        self.policy = policy
        self.attempts = 0
        self.spent = 0.0  # seconds of budget used: failed attempts' time and our own backoff
        self._ceilings: Iterator[float] | None = None  # made at the first failure: most have none
        self._jitter = jitter  # tests pass ``lambda ceiling: ceiling`` to pin the schedule

    def failed(self, took: float, server_wait: float | None) -> float | None:
        """An attempt failed (5xx, timeout, no connection) after ``took`` seconds.

        Returns the wait before the next attempt, or None to give up.
        """
        policy = self.policy
        self.attempts += 1
        self.spent += took
        if self.attempts >= policy.max_attempts:
            return None
        if self._ceilings is None:
            self._ceilings = policy.ceilings()
        own = self._jitter(next(self._ceilings))
        if self.spent + own > policy.budget:
            return None
        self.spent += own
        if server_wait is not None:  # a lower bound, capped; its excess is not budget
            return max(own, min(server_wait, policy.max_retry_after))
        return own


def rate_limit_wait(policy: RetryPolicy, server_wait: float | None, streak: int) -> float:
    """How long a batch waits after a 429, its ``streak``-th in a row (1 for the first).

    At least :data:`RATE_LIMIT_FLOOR` (or the backoff base if larger), doubling with the
    streak up to ``max_backoff``; a longer ``Retry-After`` wins, capped at ``max_retry_after``.
    """
    floor = max(RATE_LIMIT_FLOOR, policy.backoff) * 2.0 ** min(streak - 1, 62)
    floor = min(floor, max(policy.max_backoff, RATE_LIMIT_FLOOR))
    if server_wait is None:
        return floor
    return max(floor, min(server_wait, policy.max_retry_after))
