"""One batch's decisions, pure: fed answers and a clock, asked for the next step."""

from __future__ import annotations

import math

import httpx
import pytest

from koala_async import RetryPolicy
from koala_async._attempts import Attempts, Do, Hold, Step
from koala_async._circuit import DEAD, OPEN, Circuit
from koala_async._limiter import Limiter, Pacer
from koala_async._retry import Tries

EXACT = RetryPolicy()  # the defaults docs/reference/options.md states


def run(policy: RetryPolicy = EXACT, size: int = 3, limiter: Limiter | None = None) -> Attempts:
    return Attempts(
        size,
        policy,
        Circuit(policy.backoff, policy.max_backoff),
        limiter or Limiter(256, initial=32),
        Pacer(),
        jitter=lambda ceiling: ceiling,  # no jitter: the schedule itself
    )


def answer(
    attempts: Attempts,
    status: int | None = 200,
    *,
    now: float = 0.0,
    took: float = 0.05,
    header: str | None = None,
    error: BaseException | None = None,
) -> bool:
    step = attempts.next(now)
    assert step.do is Do.SEND, step
    return attempts.answered(now, took, status, header, error, backlog=True)


def test_the_readme_retry_defaults() -> None:
    policy = RetryPolicy()
    assert (
        policy.max_attempts,
        policy.budget,
        policy.backoff,
        policy.max_backoff,
        policy.max_retry_after,
    ) == (10, 120.0, 0.5, 30.0, 120.0)


def test_the_default_backoff_schedule_exactly() -> None:
    """backoff * 2**retry up to max_backoff, one wait per failure (the backoff package's expo,
    jitter aside). Without jitter the 120 s budget ends it before max_attempts: a ninth
    30 s wait would spend 121.5 s; with full jitter the waits average half."""
    attempts = run()
    waits = []
    while True:
        answer(attempts, 503, took=0.0)
        step = attempts.next(0.0)
        if step.do is not Do.WAIT:
            break
        assert step.hold is Hold.OWN
        waits.append(step.seconds)
    assert waits == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert step == Step(Do.SETTLE, reason="retries_exhausted", status=503)
    assert attempts.sent == 9
    no_budget = run(RetryPolicy(budget=math.inf))
    ceilings = []
    for _ in range(9):
        answer(no_budget, 503, took=0.0)
        ceilings.append(no_budget.next(0.0).seconds)
    assert ceilings == [0.5, 1, 2, 4, 8, 16, 30, 30, 30], "as the options page says"
    answer(no_budget, 503, took=0.0)
    assert no_budget.next(0.0).reason == "retries_exhausted", "max_attempts=10"


def test_jitter_draws_below_each_ceiling() -> None:
    tries = Tries(RetryPolicy(backoff=1.0, max_backoff=4.0, budget=math.inf))
    for ceiling in (1, 2, 4, 4):
        wait = tries.failed(0.0, None)
        assert wait is not None
        assert 0 <= wait <= ceiling


def test_the_budget_counts_the_batch_s_own_backoff() -> None:
    attempts = run(RetryPolicy(backoff=0.4, budget=1.0))
    answer(attempts, 503, took=0.0)
    assert attempts.next(0.0).seconds == 0.4  # spent 0.4 of 1.0
    answer(attempts, 503, took=0.0)  # its next backoff, 0.8, would spend 1.2
    assert attempts.next(0.0).reason == "retries_exhausted"


def test_a_2xx_is_delivered_and_a_300_is_not() -> None:
    ok = run()
    assert ok.next(0.0) == Step(Do.SEND), "no probe while the circuit is closed"
    ok.answered(0.0, 0.05, 200, None, None, backlog=True)
    assert ok.next(0.0) == Step(Do.SETTLE, status=200)
    delivered = run()
    answer(delivered, 204)
    assert delivered.next(0.0) == Step(Do.SETTLE, status=204)
    redirected = run()
    answer(redirected, 300)
    assert redirected.next(0.0) == Step(Do.SETTLE, reason="rejected", status=300)


def test_a_413_splits_a_batch_and_drops_a_single_entry() -> None:
    batch = run(size=2)
    answer(batch, 413)
    assert batch.next(0.0).do is Do.SPLIT
    single = run(size=1)
    answer(single, 413)
    assert single.next(0.0).reason == "too_large"


def test_a_429_holds_the_batch_without_using_an_attempt() -> None:
    attempts = run(RetryPolicy(max_attempts=1))
    answer(attempts, 429, header="1")
    assert attempts.next(0.0) == Step(Do.WAIT, 1.0, Hold.OWN, 1)
    answer(attempts, 429, header="0", now=1.0)
    assert attempts.next(1.0).seconds == 1.0, "at least the floor, doubling with the streak"
    answer(attempts, 200, now=2.0)
    assert attempts.next(2.0).reason is None, "delivered: the 429s used no attempt"


def test_a_long_retry_after_is_clamped() -> None:
    attempts = run()
    answer(attempts, 429, header="100000")
    assert attempts.next(0.0).seconds == EXACT.max_retry_after


def test_a_scatter_of_503s_cuts_no_limit() -> None:
    limiter = Limiter(256, initial=32)
    for i in range(400):
        attempts = run(limiter=limiter)
        answer(attempts, 503 if i % 10 == 0 else 200)
    assert limiter.limit > 32


def test_a_reset_is_no_timeout_to_the_limiter() -> None:
    limiter = Limiter(256, initial=8)
    for _ in range(8):
        answer(run(limiter=limiter), None, error=ConnectionResetError("reset by peer"))
    assert limiter.limit >= 8, "a reset says nothing of load: only a timeout cuts"


def test_a_timeout_cuts_the_limit() -> None:
    limiter = Limiter(256, initial=8)
    for _ in range(8):
        answer(run(limiter=limiter), None, error=TimeoutError("no complete answer"))
    assert limiter.limit < 8


def test_while_429s_come_batches_keep_to_the_rate() -> None:
    pacer = Pacer()
    circuit = Circuit(0.5, 30)
    limiter = Limiter(256)
    batches = [Attempts(1, EXACT, circuit, limiter, pacer) for _ in range(10)]
    for batch in batches[:5]:  # within a window: a lone 429 stalls nobody
        assert batch.next(0.0).do is Do.SEND
        batch.answered(0.0, 0.01, 429, None, None, backlog=True)
    assert batches[5].next(1.0).do is Do.SEND, "a window of 429s: paced from now on"
    step = batches[6].next(1.0)
    assert (step.do, step.hold) == (Do.WAIT, Hold.RATE)
    assert batches[6].next(1.0 + step.seconds).do is Do.SEND, "its turn came"
    assert batches[0].next(1.0).hold is Hold.OWN, "the 429's own Retry-After comes first"


def test_while_the_circuit_is_open_one_probe_at_a_time() -> None:
    policy = RetryPolicy()
    circuit = Circuit(policy.backoff, policy.max_backoff)
    limiter, pacer = Limiter(256), Pacer()
    first = Attempts(1, policy, circuit, limiter, pacer)
    assert first.next(0.0).do is Do.SEND
    refused = httpx.ConnectError("refused")
    assert first.answered(0.0, 0.0, None, None, refused, backlog=False), "opened"
    assert circuit.state is OPEN
    other = Attempts(1, policy, circuit, limiter, pacer)
    step = other.next(0.1)
    assert (step.do, step.hold) == (Do.WAIT, Hold.CIRCUIT)
    probe = other.next(1.0)
    assert probe == Step(Do.SEND, probe=True)
    assert first.next(1.0).hold is Hold.OWN  # its own backoff first
    assert first.next(1.0).seconds == math.inf, "waits for the probe's answer"
    assert other.answered(1.0, 0.01, 200, None, None, backlog=False), "closed"


@pytest.mark.parametrize(("status", "reason"), [(401, "unauthorized"), (404, "gone")])
def test_a_dead_endpoint_settles_every_batch_with_its_reason(status: int, reason: str) -> None:
    circuit = Circuit(0, 0)
    limiter, pacer = Limiter(256), Pacer()
    first = Attempts(1, EXACT, circuit, limiter, pacer)
    for now in (0.0, 1.0):
        assert first.next(now).do is Do.SEND
        first.answered(now, 0.0, status, None, None, backlog=False)
    assert circuit.state is DEAD
    assert first.next(2.0) == Step(Do.SETTLE, reason=reason)  # type: ignore[arg-type]
    assert Attempts(1, EXACT, circuit, limiter, pacer).next(2.0).reason == reason
