"""How many requests may be in flight: an AIMD limit that follows the round trip. Pure.

Koala takes one person per request, so a busy site needs many requests in flight at a real
round trip: at 50 ms, 2,500 requests/s need 125. A fixed number is either too small for a
busy site or too many for a struggling server. So, as TCP does with its window and Netflix's
concurrency-limits with requests:

- **Additive increase, fast at first.** While there is a backlog (work waiting for a free
  sender) and answers are healthy, each success raises the limit by one until the first sign
  of overload (slow start: the limit doubles every round trip), and by ``1/limit`` after
  that (one more per round trip).
- **Multiplicative decrease.** A 429, a 5xx or a timeout cuts the limit to
  :data:`DECREASE` of itself (never below 1), at most once per round trip's worth of
  answers, so a burst of failures from one overload counts as one.

``ceiling`` (``max_concurrent_requests``) bounds it. The runtime reads :attr:`limit`; it never
sets it.
"""

from __future__ import annotations

__all__ = ["DECREASE", "Limiter"]

DECREASE = 0.7
"""What an overload leaves of the limit."""


class Limiter:
    """The number of requests that may be in flight, adjusted by their outcomes."""

    __slots__ = ("_cut_pending", "_exact", "_slow_start", "ceiling", "floor", "limit")

    def __init__(self, ceiling: int, initial: int = 8, floor: int = 1) -> None:
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.limit = max(self.floor, min(initial, ceiling))
        self._exact = float(self.limit)
        self._slow_start = True
        self._cut_pending = 0  # answers to ignore after a cut: those already in flight

    def succeeded(self, backlog: bool) -> None:
        """A request was answered well; ``backlog`` says whether work is waiting for a
        sender (if not, the limit is not what holds delivery back: no growth)."""
        if self._cut_pending:
            self._cut_pending -= 1
        if not backlog:
            return
        self._exact += 1.0 if self._slow_start else 1.0 / self._exact
        self._set(self._exact)

    def overloaded(self, in_flight: int) -> None:
        """A request met a 429, a 5xx or a timeout: the server has had enough."""
        self._slow_start = False
        if self._cut_pending:  # already cut for this round trip's answers
            self._cut_pending -= 1
            return
        self._exact = max(float(self.floor), self._exact * DECREASE)
        self._set(self._exact)
        self._cut_pending = in_flight

    def _set(self, value: float) -> None:
        self._exact = min(value, float(self.ceiling))
        self.limit = max(self.floor, int(self._exact))
