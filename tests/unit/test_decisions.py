"""The pure decisions, without a server or an event loop: what an answer means, how long to
wait, whether the endpoint is up. (The limiter's are in tests/unit.)"""

from __future__ import annotations

import math
import ssl
import time
from datetime import datetime, timezone
from email.utils import format_datetime

import httpx
import pytest

from koala_async import RetryPolicy, ValidationError
from koala_async._circuit import CLOSED, CONFIRMATIONS, DEAD, OPEN, THRESHOLD, Circuit
from koala_async._retry import (
    RATE_LIMIT_FLOOR,
    Tries,
    Verdict,
    classify,
    classify_error,
    overloads,
    rate_limit_wait,
    retry_after,
    timed_out,
)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (408, Verdict.RETRY),
        (429, Verdict.RATE_LIMITED),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (501, Verdict.REJECTED),
        (505, Verdict.REJECTED),
        (413, Verdict.TOO_LARGE),
        (401, Verdict.UNAUTHORIZED),
        (403, Verdict.UNAUTHORIZED),
        (404, Verdict.GONE),
        (410, Verdict.GONE),
        (400, Verdict.REJECTED),  # whatever the body says: no "suspended" guess
        (422, Verdict.REJECTED),
    ],
)
def test_classify(status: int, verdict: Verdict) -> None:
    assert classify(status) is verdict


def test_classify_error_tells_a_certificate_from_an_unreachable_host() -> None:
    request = httpx.Request("POST", "https://x.invalid/")
    refused = httpx.ConnectError("[Errno 111] Connection refused", request=request)
    assert classify_error(refused) is Verdict.UNREACHABLE
    assert classify_error(httpx.ReadTimeout("slow", request=request)) is Verdict.RETRY
    wrapped = httpx.ConnectError("tls", request=request)
    wrapped.__cause__ = ssl.SSLCertVerificationError("certificate verify failed")
    assert classify_error(wrapped) is Verdict.GONE


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after("3") == 3
    assert retry_after("1000") == 1000  # not capped here: the caller caps
    assert retry_after("-5") == 0
    assert retry_after("nan") is None
    assert retry_after(None) is None
    assert retry_after("soon") is None
    later = format_datetime(datetime.fromtimestamp(time.time() + 30, timezone.utc), usegmt=True)
    seconds = retry_after(later)
    assert seconds is not None
    assert 25 <= seconds <= 30
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0


def test_backoff_waits_grow_with_full_jitter_and_a_cap() -> None:
    policy = RetryPolicy(backoff=1.0, max_backoff=8.0)
    for retry, cap in enumerate([1, 2, 4, 8, 8, 8, 8]):
        drawn = [policy.backoff_wait(retry) for _ in range(200)]
        assert all(0 <= w <= cap for w in drawn)
        # Full jitter: spread over [0, cap], so 200 draws reach past its middle and below it;
        # constant or un-grown waits would not.
        assert min(drawn) < cap / 2 < max(drawn), (retry, cap)
    assert RetryPolicy(backoff=0).backoff_wait(5) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be a whole number"),
        ({"max_attempts": 2.5}, "max_attempts must be a whole number"),
        ({"budget": -1}, "budget must be a number of seconds"),
        ({"budget": "x"}, "budget must be a number of seconds"),
        ({"backoff": math.nan}, "backoff must be a number of seconds"),
    ],
)
def test_retry_policy_refuses_nonsense_at_construction(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_tries_end_at_max_attempts() -> None:
    tries = Tries(RetryPolicy(backoff=0, max_attempts=3))
    assert tries.failed(0.0, None) == 0
    assert tries.failed(0.0, None) == 0
    assert tries.failed(0.0, None) is None


def test_tries_end_when_failing_spends_the_budget() -> None:
    tries = Tries(RetryPolicy(backoff=0, max_attempts=100, budget=1.0))
    assert tries.failed(0.4, None) == 0
    assert tries.failed(0.4, None) == 0
    assert tries.failed(0.4, None) is None


def test_a_server_wait_is_a_lower_bound_capped_and_spends_no_budget() -> None:
    policy = RetryPolicy(backoff=0.01, max_backoff=0.01, budget=1.0, max_retry_after=120)
    tries = Tries(policy)
    assert tries.failed(0.0, 0.0) <= 0.01  # type: ignore[operator]  # 0 never hurries past our backoff
    assert tries.failed(0.0, 500.0) == 120  # capped, and no reason to give up
    assert tries.spent < 0.1, "the server's wait is not budget"


def test_a_rate_limit_always_waits_a_doubling_floor() -> None:
    policy = RetryPolicy(backoff=0, max_backoff=30)
    waits = [rate_limit_wait(policy, 0.0, streak) for streak in (1, 2, 3, 4)]
    assert waits == [RATE_LIMIT_FLOOR * 2**k for k in range(4)]
    assert rate_limit_wait(policy, 5.0, 1) == 5.0
    assert rate_limit_wait(policy, 1e9, 1) == policy.max_retry_after
    assert rate_limit_wait(policy, None, 100) == 30


def test_the_circuit_opens_at_once_when_unreachable_and_probes_one_at_a_time() -> None:
    circuit = Circuit(backoff=0.5, max_backoff=30)
    assert circuit.answered(Verdict.UNREACHABLE, now=0.0, probe=False)
    assert circuit.state is OPEN
    assert circuit.admit(0.1) == pytest.approx(0.4)
    assert circuit.admit(0.5) is None, "the probe"
    assert circuit.admit(0.5) == math.inf, "others wait for the probe's answer"
    assert not circuit.answered(Verdict.UNREACHABLE, now=0.6, probe=True)
    assert circuit.admit(0.6) == pytest.approx(1.0), "probes back off"
    assert circuit.admit(1.6) is None
    assert circuit.answered(Verdict.DELIVERED, now=1.7, probe=True)
    assert circuit.state is CLOSED
    assert circuit.admit(1.7) is None


def test_the_circuit_opens_after_a_run_of_server_errors_not_a_scatter() -> None:
    circuit = Circuit(backoff=0.5, max_backoff=30)
    for _ in range(3):
        for _ in range(THRESHOLD - 1):
            circuit.answered(Verdict.RETRY, now=0.0, probe=False)
        circuit.answered(Verdict.DELIVERED, now=0.0, probe=False)
    assert circuit.state is CLOSED
    for _ in range(THRESHOLD):
        circuit.answered(Verdict.RETRY, now=0.0, probe=False)
    assert circuit.state is OPEN
    assert not circuit.answered(Verdict.RATE_LIMITED, now=1.0, probe=False)
    assert circuit.state is OPEN, "a rate limit says nothing about being down"


def test_at_a_high_rate_the_circuit_wants_a_round_trip_of_failures_in_a_row() -> None:
    """With 40 requests allowed in flight, five failures in a row are a scatter (30% random
    500s make them more than once a second at 700 requests/s); forty are an outage."""
    circuit = Circuit(backoff=0.5, max_backoff=30)
    for _ in range(39):
        circuit.answered(Verdict.RETRY, now=0.0, probe=False, window=40)
    assert circuit.state is CLOSED
    circuit.answered(Verdict.RETRY, now=0.0, probe=False, window=40)
    assert circuit.state is OPEN
    few = Circuit(backoff=0.5, max_backoff=30)
    for _ in range(THRESHOLD):
        few.answered(Verdict.RETRY, now=0.0, probe=False, window=2)
    assert few.state is OPEN, "never fewer than THRESHOLD"


@pytest.mark.parametrize(
    ("status", "overload"),
    [
        *[(status, True) for status in (408, 502, 503, 504)],
        *[(status, False) for status in (429, 500, 507, 599)],
    ],
)
def test_which_answers_may_mean_overload(status: int, overload: bool) -> None:
    """A 429 is the pacer's (how fast), not the limiter's (how many)."""
    assert overloads(status) is overload


@pytest.mark.parametrize(
    ("error", "overload"),
    [
        (TimeoutError("no complete answer within 10 s"), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.ConnectTimeout("slow"), True),
        (httpx.ReadError("reset"), False),
        (httpx.RemoteProtocolError("closed"), False),
    ],
)
def test_a_timeout_is_told_from_a_broken_connection(error: BaseException, overload: bool) -> None:
    assert timed_out(error) is overload


@pytest.mark.parametrize("verdict", [Verdict.UNAUTHORIZED, Verdict.GONE])
def test_a_refusal_is_confirmed_before_the_circuit_is_dead(verdict: Verdict) -> None:
    circuit = Circuit(backoff=0, max_backoff=0)
    circuit.answered(verdict, now=0.0, probe=False)
    assert circuit.state is OPEN, "one refusal may come from a passing proxy"
    assert circuit.admit(0.0) > 0, "the confirmation is spaced"  # type: ignore[operator]
    circuit.answered(Verdict.DELIVERED, now=1.0, probe=True)
    assert circuit.state is CLOSED
    for _ in range(CONFIRMATIONS):
        circuit.answered(verdict, now=2.0, probe=False)
    assert circuit.state is DEAD
    assert circuit.verdict is verdict
    assert circuit.admit(100.0) == math.inf
    assert not circuit.answered(Verdict.DELIVERED, now=3.0, probe=False), "dead stays dead"
