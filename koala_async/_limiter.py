"""How many requests may be in flight, and how fast they may go: pure, fed answers and the
clock.

Koala takes one person per request, so a busy site needs many requests in flight at a real
round trip: at 50 ms, 2,500 requests/s need 125. A fixed number is either too small for a
busy site or too many for a struggling server. Two signals say "too many", as in TCP
(loss and delay) and Netflix's concurrency-limits (its AIMD limit backs off on a timeout or
a rejection for load, its Vegas and Gradient limits on latency above a no-load baseline):

- **Loss that means load.** A timeout, or overload answers (408, 502, 503, 504) making more
  than half of a round trip's answers (TCP BBRv2 likewise ignores loss below a threshold).
  A *scatter* of 5xx or resets says a request failed, not that there were too many: it is
  retried and cuts nothing (cutting on it settled the limit at 5-10 under 10% random
  502/503, and the queue filled). The limit is cut to :data:`DECREASE` of itself.
- **Delay.** A round trip's mean latency above :data:`TOLERANCE` times the baseline (and
  :data:`MIN_QUEUEING` more: on loopback, or near Koala, scheduling noise alone doubles
  a sub-millisecond round trip), the
  lowest such mean of the last :data:`BASELINE_ROUNDS` (a mean over at least
  :data:`MIN_SAMPLES` answers, not Vegas' per-request minimum: answers 0-300 ms late at
  random must not read as a queue). Cut in proportion (``limit * baseline / mean``, to a
  quarter at most), aiming back at the baseline's latency, so the baseline stays an honest
  no-load figure against a server whose latency rises with what is in flight.

Decisions are taken once per *round*: a round closes after as many answers as the limit
allowed when it opened (at least :data:`MIN_ROUND`). After a cut the next round is skipped
(its answers are of requests sent before the cut), so a burst of failures from one overload
counts once. Without a cut, and while work waits for a sender (``backlog``), the limit grows:
by one per success until the first cut (slow start: doubling per round), then by one per
round. ``ceiling`` (``max_concurrent_requests``) bounds it.

A 429 is neither: it says *how fast*, not how many. :class:`Pacer` keeps the rate of
attempts near :data:`RATE_HEADROOM` times the rate the server accepts, while 429s come.
"""

from __future__ import annotations

from collections import deque

__all__ = ["DECREASE", "MIN_QUEUEING", "MIN_ROUND", "TOLERANCE", "Limiter", "Pacer"]

DECREASE = 0.7
"""What a loss leaves of the limit."""
TOLERANCE = 2.0
"""A round's mean latency above this many times the baseline is delay, and cuts."""
MIN_QUEUEING = 0.05
"""Seconds a mean latency must exceed the tolerated one by, to be read as queueing."""
MIN_ROUND = 8
"""The fewest answers in a round."""
MIN_SAMPLES = 32
"""Latencies a delay figure averages, at least: over fewer, random jitter reads as queueing."""
BASELINE_ROUNDS = 100
"""Delay figures the baseline is the least of: an old low ages out, so it follows the route."""
_OVERLOAD_SHARE = 0.5
# The deepest delay cut. Not Gradient2's 0.5: a cut that cannot reach the baseline's level
# leaves the next lowest figure above it, and the baseline creeps up cycle by cycle (to the
# ceiling, against a server whose latency grows with what is in flight).
_DEEPEST = 0.25


class Limiter:
    """The number of requests that may be in flight, set by their answers."""

    __slots__ = (
        "_answers",
        "_backlog",
        "_exact",
        "_figures",
        "_latency",
        "_overloads",
        "_round",
        "_samples",
        "_skip",
        "_slow_start",
        "_successes",
        "_timeouts",
        "ceiling",
        "floor",
        "limit",
    )

    def __init__(self, ceiling: int, initial: int = 8, floor: int = 1) -> None:
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.limit = max(self.floor, min(initial, ceiling))
        self._exact = float(self.limit)
        self._slow_start = True
        self._figures: deque[float] = deque(maxlen=BASELINE_ROUNDS)  # mean latency per figure
        self._latency = 0.0  # summed, toward the next delay figure
        self._samples = 0
        self._skip = False  # this round answers for requests sent before a cut
        self._open_round()

    def _open_round(self) -> None:
        self._round = max(self.limit, MIN_ROUND)
        self._answers = self._successes = self._overloads = self._timeouts = 0
        self._backlog = False

    @property
    def baseline(self) -> float | None:
        """The no-load latency: the least delay figure kept, or None before the first."""
        return min(self._figures) if self._figures else None

    def answered(
        self,
        latency: float | None,
        *,
        ok: bool = False,
        overload: bool = False,
        timeout: bool = False,
        backlog: bool = False,
    ) -> None:
        """Record one request's end.

        Args:
            latency: Seconds to its answer; None when there was none (a timeout, a reset).
            ok: It was delivered.
            overload: It met a 408, 502, 503 or 504.
            timeout: No (complete) answer came in time.
            backlog: Work waits for a free sender (otherwise the limit is not what holds
                delivery back, and it does not grow).
        """
        self._answers += 1
        self._successes += ok
        self._overloads += overload
        self._timeouts += timeout
        self._backlog |= backlog
        if latency is not None:
            self._latency += latency
            self._samples += 1
        if self._answers >= self._round:
            self._close_round()

    def _close_round(self) -> None:
        delay: float | None = None
        if self._samples >= MIN_SAMPLES:
            delay = self._latency / self._samples
            self._latency, self._samples = 0.0, 0
        if self._skip:
            self._skip = False
        elif self._timeouts or self._overloads > self._answers * _OVERLOAD_SHARE:
            self._cut(DECREASE)
        elif delay is not None and self._figures and self._queued(delay):
            self._cut(max(_DEEPEST, min(self._figures) / delay))
        elif self._backlog:
            self._set(self._exact + (self._successes if self._slow_start else 1))
        if delay is not None:
            self._figures.append(delay)
        self._open_round()

    def _queued(self, delay: float) -> bool:
        return delay > TOLERANCE * min(self._figures) + MIN_QUEUEING

    def _cut(self, factor: float) -> None:
        self._slow_start = False
        self._skip = True
        self._set(max(float(self.floor), self._exact * factor))

    def _set(self, value: float) -> None:
        self._exact = min(value, float(self.ceiling))
        self.limit = max(self.floor, int(self._exact))


RATE_HEADROOM = 1.1
"""While 429s come, attempts go at this many times the rate the server accepted."""
RATE_WINDOW = 1.0
"""Seconds of answers each pacing decision weighs."""
LIMITED_SHARE = 0.02
"""429s above this share of a window's answers start (or keep) pacing; fewer are random."""
MIN_RATE = 1.0
"""Requests per second while pacing, at least: the server is asked again, now and then."""
_BURST = 0.1  # seconds of the paced rate that may go at once


class Pacer:
    """How fast requests may go to an endpoint that answers 429: pure, fed the clock.

    A 429 says *how fast*, so pacing is a rate, decided once per :data:`RATE_WINDOW` (in
    the spirit of TCP's AIMD, on a rate, and of the client-side throttling in Google's SRE
    book, "Handling Overload"): a window whose answers were more than
    :data:`LIMITED_SHARE` 429s sets the rate to :data:`RATE_HEADROOM` times what the server
    accepted in it (halving at most the rate, or what was sent: a window whose offer was
    one burst accepted only the server's burst); a window with fewer raises the rate by
    as much again (the limit may have been lifted; doubling, as slow start would, sent
    1.65 N/s in such windows against a rate limit of N), and ends pacing when the rate
    held nothing back. At random 429s
    (0.5%) nothing is paced; against a rate limit of N requests/s, attempts settle near
    1.1 N/s. The batch that met a 429 waits its own ``Retry-After`` besides; other
    batches keep to the rate.
    """

    __slots__ = ("_accepted", "_held", "_last", "_limited", "_sent", "_start", "_tokens", "rate")

    def __init__(self) -> None:
        self.rate: float | None = None  # requests per second; None: not pacing
        self._start: float | None = None  # of the current window
        self._accepted = self._limited = self._sent = 0
        self._held = False  # the rate held an attempt back in this window
        self._tokens = 0.0
        self._last = 0.0

    def _roll(self, now: float) -> None:
        if self._start is None:
            self._start = now
        elif now - self._start >= RATE_WINDOW:
            self._decide(now)
            self._start = now
            self._accepted = self._limited = self._sent = 0
            self._held = False

    def _decide(self, now: float) -> None:
        answered = self._accepted + self._limited
        if answered and self._limited > LIMITED_SHARE * answered:
            if self.rate is None:
                self._tokens, self._last = 1.0, now
            # What the server took, with headroom; but no lower than half of what was
            # offered: a window whose offer was one burst (a flush of every person) accepted
            # only the server's burst, and pacing to that crawled (4 requests/s of 20).
            offered = self._sent / RATE_WINDOW if self.rate is None else self.rate
            self.rate = max(MIN_RATE, RATE_HEADROOM * self._accepted / RATE_WINDOW, offered / 2)
        elif self.rate is not None:
            self.rate = RATE_HEADROOM * self.rate if self._held else None

    def wait(self, now: float) -> float:
        """Seconds to wait before an attempt may go: 0 now (then report it :meth:`sent`).
        Waiters ask again after their wait; one reserving slots ahead sent more (1.5 N/s
        against a rate limit of N: reservations made at one rate outlive its change)."""
        self._roll(now)
        rate = self.rate
        if rate is None:
            return 0.0
        self._tokens = min(max(1.0, rate * _BURST), self._tokens + (now - self._last) * rate)
        self._last = now
        if self._tokens >= 1 - 1e-9:  # a waiter woken on time goes, whatever the rounding
            return 0.0
        self._held = True
        return (1 - self._tokens) / rate

    def sent(self, now: float) -> None:
        """An attempt went (after :meth:`wait` said 0)."""
        self._roll(now)
        self._sent += 1
        if self.rate is not None:
            self._tokens -= 1

    def answered(self, now: float, limited: bool) -> None:
        """An answer came: a 429 (``limited``) or any other."""
        self._roll(now)
        if limited:
            self._limited += 1
        else:
            self._accepted += 1
