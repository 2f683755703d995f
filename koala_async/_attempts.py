"""One batch's way to an outcome, as decisions: sans-IO, fed answers and the clock.

In the spirit of h11's ``Connection``: :class:`Attempts` never touches a socket or an event
loop. The sender asks it :meth:`~Attempts.next` for a :class:`Step` (send, wait, split, or
settle with a reason), performs it, and feeds back what the attempt met with
:meth:`~Attempts.answered`. The order of decisions lives here, once:

1. **settle** a batch whose fate is known (delivered, given up, or the endpoint is dead);
2. **wait** the batch's own hold: its backoff after a failure, or its ``Retry-After`` after a
   429 (both lend the batch's place under the limit to other people's batches);
3. **wait** for the rate: while 429s come, attempts keep to what the server accepts
   (:class:`~._limiter.Pacer`);
4. **wait** for the circuit: while the endpoint is down, one probe at a time;
5. **send**.

An answer is classified (:func:`~._retry.classify`), then told to the pacer (429 or not), the
limiter (latency, loss), the circuit, and the batch's retry state (:class:`~._retry.Tries`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple

from ._circuit import DEAD, OPEN, Circuit
from ._limiter import Limiter, Pacer
from ._retry import (
    FATAL,
    RetryPolicy,
    Tries,
    Verdict,
    classify,
    classify_error,
    full_jitter,
    overloads,
    rate_limit_wait,
    retry_after,
    timed_out,
)
from ._stats import DropReason

__all__ = ["DROPS", "Attempts", "Do", "Hold", "Step"]

DROPS: dict[Verdict, DropReason] = {
    Verdict.REJECTED: "rejected",
    Verdict.TOO_LARGE: "too_large",
    Verdict.UNAUTHORIZED: "unauthorized",
    Verdict.GONE: "gone",
}
"""The drop reason of each verdict that gives a batch up."""


class Do(enum.Enum):
    SEND = "send"
    WAIT = "wait"
    SPLIT = "split"  # a 413 on a batch of more than one: send it in halves
    SETTLE = "settle"


class Hold(enum.Enum):
    """What a wait is for: the sender performs each its own way."""

    OWN = "own"  # this batch's backoff or Retry-After: its place serves others meanwhile
    RATE = "rate"  # the pacer's: attempts keep to the rate the server accepts
    CIRCUIT = "circuit"  # the endpoint is down: until the next probe, or the circuit changes


class Step(NamedTuple):
    """What to do next."""

    do: Do
    seconds: float = 0.0  # WAIT: how long (at most)
    hold: Hold = Hold.OWN  # WAIT: what for
    turns: int = 0  # WAIT: attempts left, so a closing client cuts the wait to leave room
    probe: bool = False  # SEND: this request tests an open circuit
    reason: DropReason | None = None  # SETTLE: None when delivered
    status: int | None = None  # SETTLE: the last answer's status, if any
    error: BaseException | None = None  # SETTLE: the last failure's exception, if any


# The steps most requests take, made once: a NamedTuple with defaults costs ~0.3 µs to make.
_SEND = Step(Do.SEND)
_PROBE = Step(Do.SEND, probe=True)
_OK = Step(Do.SETTLE, status=200)


class Attempts:
    """One batch's decisions, from its first attempt to its outcome."""

    __slots__ = (
        "_circuit",
        "_end",
        "_hold",
        "_limiter",
        "_pacer",
        "_probe",
        "_size",
        "_streak",
        "_tries",
        "probed",
        "sent",
        "verdict",
    )

    def __init__(
        self,
        size: int,
        policy: RetryPolicy,
        circuit: Circuit,
        limiter: Limiter,
        pacer: Pacer,
        jitter: Callable[[float], float] = full_jitter,
    ) -> None:
        self._size = size
        self._circuit = circuit
        self._limiter = limiter
        self._pacer = pacer
        self._tries = Tries(policy, jitter)
        self._hold: float | None = None  # seconds this batch waits before its next attempt
        self._end: Step | None = None
        self._streak = 0  # 429s in a row for this batch
        self._probe = False  # the attempt under way tests an open circuit
        self.probed = False  # the last answer was to a probe
        self.sent = 0  # attempts made
        self.verdict: Verdict | None = None  # what the last answer meant

    def next(self, now: float) -> Step:
        """What to do now (``now``: ``time.monotonic()``)."""
        if self._end is not None:
            return self._end
        circuit = self._circuit
        if circuit.state is DEAD:
            assert circuit.verdict is not None
            self._end = Step(Do.SETTLE, reason=DROPS[circuit.verdict])
            return self._end
        if self._hold is not None:
            wait, self._hold = self._hold, None
            turns = self._tries.policy.max_attempts - self._tries.attempts
            return Step(Do.WAIT, wait, Hold.OWN, turns)
        wait = self._pacer.wait(now)
        if wait > 0:
            return Step(Do.WAIT, wait, Hold.RATE, 2)
        admitted = circuit.admit(now)
        if admitted is not None:
            return Step(Do.WAIT, admitted, Hold.CIRCUIT, 2)
        self._probe = probe = circuit.state is OPEN
        self._pacer.sent(now)
        self.sent += 1
        return _PROBE if probe else _SEND

    def abandoned(self) -> None:
        """The attempt under way ended without an answer (cancelled at shutdown)."""
        if self._probe:
            self._probe = False
            self._circuit.abandon()

    def answered(
        self,
        now: float,
        took: float,
        status: int | None,
        header: str | None,
        error: BaseException | None,
        backlog: bool,
    ) -> bool:
        """Feed what the attempt met: a ``status`` (with its ``Retry-After`` ``header``), or
        an ``error``; ``took`` seconds; ``backlog``: work waits for a sender. Returns True
        when the circuit changed (the sender tells people, and wakes who waits on it)."""
        if error is not None:
            verdict = classify_error(error)
        else:
            assert status is not None
            verdict = classify(status)
        self.verdict = verdict
        limited = verdict is Verdict.RATE_LIMITED
        if error is None:
            self._pacer.answered(now, limited)
        if not limited:
            self._limiter.answered(
                took if error is None else None,
                ok=verdict is Verdict.DELIVERED,
                overload=overloads(status),
                timeout=error is not None and timed_out(error),
                backlog=backlog,
            )
        probe, self._probe = self._probe, False
        self.probed = probe  # a probe that failed: the sender wakes who waits to probe next
        circuit = self._circuit
        if verdict is Verdict.GONE and error is not None:
            circuit.dead_now(verdict)  # a TLS certificate error needs no confirmation
            changed = True
        else:
            changed = circuit.answered(verdict, now, probe, self._limiter.limit)
        if verdict is Verdict.DELIVERED:
            self._end = _OK if status == 200 else Step(Do.SETTLE, status=status)
        elif limited:  # waiting out a rate limit is not failing: no attempt, no budget
            self._streak += 1
            self._hold = rate_limit_wait(self._tries.policy, retry_after(header), self._streak)
        elif verdict is Verdict.REJECTED or (verdict is Verdict.TOO_LARGE and self._size <= 1):
            self._end = Step(Do.SETTLE, reason=DROPS[verdict], status=status)
        elif verdict is Verdict.TOO_LARGE:
            self._end = Step(Do.SPLIT, status=status)
        elif verdict not in FATAL:  # FATAL: the circuit confirms with a spaced probe
            self._streak = 0
            self._hold = self._tries.failed(took, retry_after(header))
            if self._hold is None:
                self._end = Step(Do.SETTLE, reason="retries_exhausted", status=status, error=error)
        return changed
