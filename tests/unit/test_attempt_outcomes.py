"""One batch's decisions, beyond tests/unit/test_attempts.py: what each answer tells the
limiter and the circuit, and what a wait or an outcome carries to the sender."""

from __future__ import annotations

import ssl

import httpx
import pytest
from test_attempts import answer as _answer

from koala_async import RetryPolicy
from koala_async._attempts import Attempts, Do, Hold, Step
from koala_async._circuit import DEAD, OPEN, Circuit
from koala_async._limiter import Limiter, Pacer
from koala_async._retry import Verdict

POLICY = RetryPolicy()


def _attempts(
    policy: RetryPolicy = POLICY,
    size: int = 3,
    limiter: Limiter | None = None,
    circuit: Circuit | None = None,
) -> Attempts:
    return Attempts(
        size,
        policy,
        circuit or Circuit(policy.backoff, policy.max_backoff),
        limiter or Limiter(256, initial=8),
        Pacer(),
        jitter=lambda ceiling: ceiling,
    )


def test_the_meaning_of_the_last_answer_is_kept() -> None:
    attempts = _attempts()
    _answer(attempts, 503)
    first = attempts.verdict
    attempts.next(0.0)  # its backoff
    _answer(attempts, 200, now=1.0)
    assert (first, attempts.verdict) == (Verdict.RETRY, Verdict.DELIVERED)


def test_delivered_answers_grow_the_limit_while_work_waits() -> None:
    limiter = Limiter(256, initial=8)
    for _ in range(8):
        _answer(_attempts(limiter=limiter), 200)
    assert limiter.limit > 8


def test_a_round_of_overload_answers_cuts_the_limit() -> None:
    limiter = Limiter(256, initial=8)
    for _ in range(8):
        _answer(_attempts(limiter=limiter), 503)
    assert limiter.limit < 8


def test_the_limiter_learns_latency_from_answers_only() -> None:
    answered, reset = Limiter(256, initial=8), Limiter(256, initial=8)
    for _ in range(64):
        _answer(_attempts(limiter=answered), 200, took=0.05)
        _answer(_attempts(limiter=reset), None, took=0.05, error=httpx.ReadError("reset"))
    assert answered.baseline == pytest.approx(0.05)
    assert reset.baseline is None, "a reset's time is not a round trip"


def test_a_failed_probe_is_reported_and_the_next_probe_goes_after_the_backoff() -> None:
    circuit = Circuit(POLICY.backoff, POLICY.max_backoff)
    first = _attempts(circuit=circuit)
    _answer(first, None, error=httpx.ConnectError("refused"))
    assert not first.probed
    prober = _attempts(circuit=circuit)
    assert prober.next(1.0) == Step(Do.SEND, probe=True)
    assert not prober.answered(1.0, 0.0, None, None, httpx.ConnectError("refused"), False)
    assert prober.probed, "the sender wakes those waiting to probe next"
    assert circuit.state is OPEN
    step = _attempts(circuit=circuit).next(1.0)
    assert (step.do, step.hold) == (Do.WAIT, Hold.CIRCUIT)
    assert step.seconds == pytest.approx(2 * POLICY.backoff), "not forever"


def test_an_own_wait_tells_how_many_attempts_are_left() -> None:
    attempts = _attempts(RetryPolicy(max_attempts=4))
    _answer(attempts, 500)
    assert attempts.next(0.0) == Step(Do.WAIT, POLICY.backoff, Hold.OWN, 3)
    _answer(attempts, 500, now=1.0)
    assert attempts.next(1.0).turns == 2


def test_a_rate_or_circuit_wait_leaves_room_for_an_attempt_when_closing() -> None:
    circuit = Circuit(POLICY.backoff, POLICY.max_backoff)
    _answer(_attempts(circuit=circuit), None, error=httpx.ConnectError("refused"))
    step = _attempts(circuit=circuit).next(0.0)
    assert step.hold is Hold.CIRCUIT
    assert step.turns >= 1
    pacer = Pacer()
    for _ in range(5):
        paced = Attempts(1, POLICY, Circuit(0.5, 30), Limiter(256), pacer)
        assert paced.next(0.0).do is Do.SEND
        paced.answered(0.0, 0.01, 429, None, None, backlog=True)
    Attempts(1, POLICY, Circuit(0.5, 30), Limiter(256), pacer).next(1.0)
    step = Attempts(1, POLICY, Circuit(0.5, 30), Limiter(256), pacer).next(1.0)
    assert step.hold is Hold.RATE
    assert step.turns >= 1


def test_a_certificate_error_settles_the_batch_as_gone_at_once() -> None:
    circuit = Circuit(POLICY.backoff, POLICY.max_backoff)
    attempts = _attempts(circuit=circuit)
    error = httpx.ConnectError("certificate verify failed")
    error.__cause__ = ssl.SSLCertVerificationError("not the host's")
    assert _answer(attempts, None, error=error), "the circuit changed"
    assert (circuit.state, circuit.verdict) == (DEAD, Verdict.GONE)
    assert attempts.next(0.0) == Step(Do.SETTLE, reason="gone")
    assert _attempts(circuit=circuit).next(0.0) == Step(Do.SETTLE, reason="gone")


def test_a_split_carries_the_413() -> None:
    attempts = _attempts(size=2)
    _answer(attempts, 413)
    assert attempts.next(0.0) == Step(Do.SPLIT, status=413)


def test_a_server_error_ends_a_run_of_429s() -> None:
    attempts = _attempts()
    _answer(attempts, 429)
    first = attempts.next(0.0).seconds
    _answer(attempts, 429, now=1.0)
    assert attempts.next(1.0).seconds == pytest.approx(2 * first), "doubling with the streak"
    _answer(attempts, 500, now=2.0)
    attempts.next(2.0)  # its backoff
    _answer(attempts, 429, now=3.0)
    assert attempts.next(3.0).seconds == pytest.approx(first), "a new run of 429s"


def test_a_retry_after_on_a_server_error_is_the_least_wait() -> None:
    attempts = _attempts()
    _answer(attempts, 503, header="7")
    assert attempts.next(0.0) == Step(Do.WAIT, 7.0, Hold.OWN, POLICY.max_attempts - 1)


def test_a_batch_given_up_after_errors_carries_the_last_status_or_error() -> None:
    errors = _attempts(RetryPolicy(max_attempts=2, backoff=0))
    _answer(errors, None, error=httpx.ReadError("first"))
    errors.next(0.0)
    last = httpx.ReadError("last")
    _answer(errors, None, error=last)
    assert errors.next(0.0) == Step(Do.SETTLE, reason="retries_exhausted", error=last)
    statuses = _attempts(RetryPolicy(max_attempts=1))
    _answer(statuses, 502)
    assert statuses.next(0.0) == Step(Do.SETTLE, reason="retries_exhausted", status=502)
