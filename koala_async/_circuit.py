"""One circuit per endpoint: notice that Koala (or whatever ``base_url`` names) is down or gone,
instead of letting every batch find out for itself. Pure: fed answers, asked "may I send?".

- **closed**: requests go out freely.
- **open**: requests failed with no connection at all (at once), or with 5xx or timeouts
  :data:`THRESHOLD` times in a row, or a round trip's worth of answers in a row if that is
  more (the number allowed in flight): at a high rate, a few failures in a row are common
  on a server that fails now and then (30% random 500s at 700 requests/s: five in a row
  more than once a second), and opening stalls everyone. One request at a time, a *probe*,
  tests the endpoint, with an exponential backoff between probes; the other batches wait
  without using their attempts. The first good answer closes the circuit, and everything
  drains at full speed.
- **dead**: the endpoint is gone for good: the key is refused (401/403) or the path is not
  Koala's (404/410, or a TLS certificate that is not the host's). A refusal is confirmed by
  a second, spaced request before it is final, since one 401 may come from a passing proxy.
  Nothing more is sent.
"""

from __future__ import annotations

import math

from ._retry import Verdict

__all__ = ["CLOSED", "DEAD", "OPEN", "THRESHOLD", "Circuit"]

CLOSED, OPEN, DEAD = "closed", "open", "dead"
THRESHOLD = 5
"""Failed answers in a row (5xx, timeouts) that open the circuit."""
CONFIRMATIONS = 2
"""Refusals in a row (401/403/404/410) that make the endpoint dead."""
_MIN_SPACING = 0.05  # seconds between probes even with backoff=0, so a refusal is confirmed apart


class Circuit:
    """The state of the endpoint, and who may send to it now."""

    __slots__ = (
        "_base",
        "_cap",
        "_failed_probes",
        "_failures",
        "_next_probe",
        "_probing",
        "_refusals",
        "state",
        "verdict",
    )

    def __init__(self, backoff: float, max_backoff: float) -> None:
        self._base = max(backoff, _MIN_SPACING)
        # backoff=0 asks for no waits (tests): probes then keep the least spacing.
        self._cap = max(max_backoff, self._base) if backoff > 0 else self._base
        self.state = CLOSED
        self.verdict: Verdict | None = None  # what opened it, or made it dead
        self._failures = 0
        self._refusals = 0
        self._failed_probes = 0
        self._probing = False
        self._next_probe = 0.0

    def admit(self, now: float) -> float | None:
        """None if a request may go now (when open, it is the probe and must be reported);
        otherwise seconds to wait before asking again (``inf``: until the probe is answered).
        A dead circuit admits nothing, ever: check :attr:`state` first."""
        if self.state is CLOSED:
            return None
        if self.state is DEAD or self._probing:
            return math.inf
        wait = self._next_probe - now
        if wait > 0:
            return wait
        self._probing = True
        return None

    def answered(self, verdict: Verdict, now: float, probe: bool, window: int = 0) -> bool:
        """Record an answer (``probe``: it was admitted while open; ``window``: the number of
        requests allowed in flight). Returns True when the state changed."""
        before = self.state
        if probe:
            self._probing = False
        if before is DEAD:
            return False
        if verdict is Verdict.UNAUTHORIZED or verdict is Verdict.GONE:  # FATAL; no enum hash
            self._refusals = self._refusals + 1 if verdict is self.verdict else 1
            if self._refusals >= CONFIRMATIONS:
                self.state, self.verdict = DEAD, verdict
                return True
            self._open(verdict, now)
        elif verdict is Verdict.UNREACHABLE or verdict is Verdict.RETRY:
            # No refusal count to reset: after a refusal the circuit is open, so this opens
            # it again with this verdict, and the next refusal counts from 1.
            self._failures += 1
            if (
                before is OPEN
                or verdict is Verdict.UNREACHABLE
                or self._failures >= max(THRESHOLD, window)
            ):
                self._open(verdict, now)
        elif verdict is Verdict.RATE_LIMITED:
            return False  # the server is there; the rate limit has its own pause
        else:  # delivered, or an answer about this batch alone: the endpoint works
            self._failures = self._refusals = self._failed_probes = 0
            self.state, self.verdict = CLOSED, None
        return self.state is not before

    def dead_now(self, verdict: Verdict) -> None:
        """Make the circuit dead at once (a TLS certificate error needs no confirmation)."""
        self.state, self.verdict = DEAD, verdict

    def abandon(self) -> None:
        """The probe went unanswered (cancelled at shutdown): let another try."""
        self._probing = False

    def _open(self, verdict: Verdict, now: float) -> None:
        self.verdict = verdict
        if self.state is OPEN:
            self._failed_probes += 1
        wait = min(self._base * 2.0 ** min(self._failed_probes, 62), self._cap)
        self.state = OPEN
        self._next_probe = now + wait
