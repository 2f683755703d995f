"""The limiter and the pacer, pure: fed answers and a clock, no sockets, no event loop."""

from __future__ import annotations

import random

import pytest

from koala_async._limiter import (
    BASELINE_ROUNDS,
    DECREASE,
    MIN_RATE,
    MIN_ROUND,
    MIN_SAMPLES,
    RATE_HEADROOM,
    RATE_WINDOW,
    Limiter,
    Pacer,
)


def round_of(limiter: Limiter, latency: float | None = 0.05, **answer: bool) -> None:
    """One round's answers: as many as the limit allowed when it opened (at least MIN_ROUND)."""
    for _ in range(max(limiter.limit, MIN_ROUND)):
        limiter.answered(latency, **answer)


def test_slow_start_doubles_per_round_while_work_waits() -> None:
    limiter = Limiter(ceiling=256, initial=8)
    for _ in range(7):
        limiter.answered(0.05, ok=True, backlog=True)
    assert limiter.limit == 8, "nothing changes within a round"
    limiter.answered(0.05, ok=True, backlog=True)
    assert limiter.limit == 16, "one more per success, at the round's close"


def test_without_a_backlog_the_limit_does_not_grow() -> None:
    limiter = Limiter(ceiling=256, initial=8)
    round_of(limiter, ok=True, backlog=False)
    assert limiter.limit == 8


def test_a_timeout_cuts_once_per_round_trip() -> None:
    limiter = Limiter(ceiling=256, initial=100)
    round_of(limiter, ok=True, backlog=True)
    assert limiter.limit == 200
    limiter.answered(None, timeout=True)
    round_of(limiter, ok=True, backlog=True)  # the rest of that round
    assert limiter.limit == int(200 * DECREASE)
    cut = limiter.limit
    round_of(limiter, None, timeout=True)  # answers of requests sent before the cut
    assert limiter.limit == cut, "one cut per round trip"
    round_of(limiter, None, timeout=True)
    assert limiter.limit == int(cut * DECREASE), "the next round trip's timeouts cut again"


def test_after_a_cut_successes_widen_by_one_per_round_however_many() -> None:
    limiter = Limiter(ceiling=256, initial=40)
    round_of(limiter, None, timeout=True)
    round_of(limiter, ok=True, backlog=True)  # the skipped round
    cut = limiter.limit
    assert cut == int(40 * DECREASE)
    for grown in range(1, 4):
        round_of(limiter, ok=True, backlog=True)
        assert limiter.limit == cut + grown


def test_a_scatter_of_overload_answers_is_not_overload() -> None:
    """10% random 502/503 once settled the limit at 5-10; they are retried, and cut nothing."""
    limiter = Limiter(ceiling=256, initial=32)
    rng = random.Random(1)
    for _ in range(5_000):
        failed = rng.random() < 0.1
        limiter.answered(rng.uniform(0, 0.3), ok=not failed, overload=failed, backlog=True)
    assert limiter.limit == 256


def test_resets_and_500s_cut_nothing() -> None:
    limiter = Limiter(ceiling=256, initial=32)
    round_of(limiter, None, backlog=True)  # resets: no answer, no signal
    round_of(limiter, 0.05, backlog=True)  # 500s
    assert limiter.limit == 32, "not cut (and failures widen nothing)"
    round_of(limiter, 0.05, ok=True, backlog=True)
    assert limiter.limit == 64, "still in slow start: nothing read as overload"


def test_overload_answers_making_most_of_a_round_cut() -> None:
    limiter = Limiter(ceiling=256, initial=20)
    for i in range(20):
        limiter.answered(0.05, ok=i < 9, overload=i >= 9, backlog=True)
    assert limiter.limit == int(20 * DECREASE)
    half = Limiter(ceiling=256, initial=20)
    for i in range(20):
        half.answered(0.05, ok=i < 10, overload=i >= 10, backlog=True)
    assert half.limit == 30, "half is not most: the 10 successes widen it"


def test_random_latency_is_not_queueing() -> None:
    """Answers 0-300 ms late at random, unrelated to what is in flight: Vegas' per-request
    minimum would read nearly all of it as a queue."""
    limiter = Limiter(ceiling=256, initial=32)
    rng = random.Random(2)
    lowest = 256
    for _ in range(20_000):
        limiter.answered(rng.uniform(0, 0.3), ok=True, backlog=True)
        lowest = min(lowest, limiter.limit)
    assert (limiter.limit, lowest) == (256, 32)


def overloaded(limiter: Limiter, rounds: int, per_request: float = 0.01) -> list[int]:
    """A server that answers one request at a time: latency grows with what is in flight."""
    limits = []
    for _ in range(rounds):
        round_of(limiter, per_request * limiter.limit, ok=True, backlog=True)
        limits.append(limiter.limit)
    return limits


def test_a_server_whose_latency_rises_with_what_is_in_flight_is_backed_off() -> None:
    limiter = Limiter(ceiling=256, initial=8)
    limits = overloaded(limiter, 2_000)
    assert max(limits[-500:]) < 64, limits[-20:]
    assert min(limits[-500:]) >= 4, "backed off, not collapsed"


def test_the_delay_cut_aims_back_at_the_baseline() -> None:
    limiter = Limiter(ceiling=256, initial=64)
    for _ in range(MIN_SAMPLES // 64 + 1):
        round_of(limiter, 0.05, ok=True, backlog=False)
    assert limiter.baseline == pytest.approx(0.05)
    round_of(limiter, 0.2, ok=True, backlog=True)  # 4x the baseline
    assert limiter.limit == 16, "cut to baseline/mean"


def test_the_baseline_is_the_least_of_recent_figures_and_ages_out() -> None:
    limiter = Limiter(ceiling=64, initial=64)
    round_of(limiter, 0.02)
    assert limiter.baseline == pytest.approx(0.02)
    for _ in range(BASELINE_ROUNDS - 1):
        round_of(limiter, 0.04)
    assert limiter.baseline == pytest.approx(0.02)
    round_of(limiter, 0.04)
    assert limiter.baseline == pytest.approx(0.04), "the old low aged out"


def test_floor_and_ceiling() -> None:
    limiter = Limiter(ceiling=4, initial=8)
    assert limiter.limit == 4
    for _ in range(50):
        round_of(limiter, ok=True, backlog=True)
    assert limiter.limit == 4
    for _ in range(50):
        round_of(limiter, None, timeout=True)
    assert limiter.limit == 1


# The pacer


def test_without_429s_the_pacer_never_waits() -> None:
    pacer = Pacer()
    for i in range(3_000):
        now = i / 1000
        assert pacer.wait(now) == 0
        pacer.sent(now)
        if i % 2:
            pacer.answered(now, limited=False)  # half still in flight
    assert pacer.rate is None


def test_random_429s_pace_nothing() -> None:
    """0.5% random 429s (each pausing every sender once lost 48% of a busy site's entries)."""
    pacer = Pacer()
    for i in range(10_000):
        now = i / 1000
        assert pacer.wait(now) == 0
        pacer.sent(now)
        pacer.answered(now, limited=i % 200 == 0)


def test_a_window_of_429s_paces_at_the_accepted_rate_plus_headroom() -> None:
    pacer = Pacer()
    for i in range(100):  # one window: 100 attempts, 50 accepted
        assert pacer.wait(i / 100) == 0
        pacer.sent(i / 100)
        pacer.answered(i / 100, limited=i % 2 == 0)
    assert pacer.wait(1.0) == 0, "the window closes: one may go at once"
    rate = RATE_HEADROOM * 50 / RATE_WINDOW
    assert pacer.rate == pytest.approx(rate)
    pacer.sent(1.0)
    assert pacer.wait(1.0) == pytest.approx(1 / rate), "then one every 1/rate s"
    assert pacer.wait(1.0) == pytest.approx(1 / rate), "asked again: the same, nothing taken"


def test_pacing_ends_when_the_429s_stop_and_the_rate_held_nothing_back() -> None:
    pacer = Pacer()
    pacer.answered(0.0, limited=True)
    assert pacer.wait(1.0) == 0
    assert pacer.rate == MIN_RATE, "nothing accepted: the least rate, never none"
    pacer.sent(1.0)
    assert pacer.wait(1.1) > 0, "held back"
    pacer.answered(1.5, limited=False)
    pacer.answered(2.0, limited=False)
    assert pacer.rate == RATE_HEADROOM * MIN_RATE, "no 429s in a window that held back: up"
    pacer.answered(3.0, limited=False)
    assert pacer.rate is None, "a window that held nothing back: pacing is over"


@pytest.mark.parametrize("rate", [20, 100, 400])
def test_against_a_token_bucket_attempts_stay_within_1_2_n(rate: int) -> None:
    """A server taking ``rate`` requests/s (a token bucket, 429 beyond) and a client that
    always has more to send, up to one attempt per millisecond, answered at once: after a
    few seconds, attempts stay within 1.2 N per second and near N are accepted."""
    pacer = Pacer()
    tokens, last = 1.0, 0.0
    per_second: list[list[int]] = [[0, 0] for _ in range(20)]
    for ms in range(20_000):
        now = ms / 1000
        tokens = min(max(1.0, rate / 10), tokens + (now - last) * rate)
        last = now
        if pacer.wait(now) > 0:
            continue
        pacer.sent(now)
        limited = tokens < 1
        tokens -= 0 if limited else 1
        pacer.answered(now, limited)
        per_second[ms // 1000][0] += 1
        per_second[ms // 1000][1] += not limited
    settled = per_second[8:]
    assert max(attempts for attempts, _ in settled) <= 1.2 * rate, settled
    assert min(accepted for _, accepted in settled) >= 0.9 * rate, settled
