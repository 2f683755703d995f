"""The limiter and the pacer beyond tests/unit/test_limiter.py: what a round counts, how deep
a delay cut goes, when a window of 429s starts pacing, and how fast a paced client sends."""

from __future__ import annotations

import pytest

from koala_async._limiter import MIN_SAMPLES, RATE_HEADROOM, Limiter, Pacer


def test_a_limit_grows_only_when_told_that_work_waits() -> None:
    limiter = Limiter(ceiling=256, initial=8)
    for _ in range(8):
        limiter.answered(0.05, ok=True)
    assert limiter.limit == 8


def test_work_waiting_at_any_answer_of_a_round_lets_the_limit_grow() -> None:
    limiter = Limiter(ceiling=256, initial=8)
    limiter.answered(0.05, ok=True, backlog=True)
    for _ in range(7):
        limiter.answered(0.05, ok=True, backlog=False)
    assert limiter.limit == 16


def test_the_baseline_is_known_after_min_samples_answers() -> None:
    limiter = Limiter(ceiling=256, initial=8)
    for _ in range(MIN_SAMPLES - 1):
        limiter.answered(0.05, ok=True)
    assert limiter.baseline is None
    limiter.answered(0.05, ok=True)
    assert limiter.baseline == pytest.approx(0.05)


def test_a_delay_cut_is_in_proportion_to_the_delay() -> None:
    limiter = Limiter(ceiling=256, initial=MIN_SAMPLES)
    for _ in range(MIN_SAMPLES):
        limiter.answered(0.1, ok=True)
    for _ in range(MIN_SAMPLES):
        limiter.answered(0.3, ok=True, backlog=True)  # 3x the baseline
    assert limiter.limit == MIN_SAMPLES // 3, "to baseline/mean of itself, not to the deepest"


def _window(pacer: Pacer, start: float, answers: int, limited: int) -> None:
    """One window's attempts, all sent and answered within it; the first ``limited`` 429s."""
    for i in range(answers):
        now = start + i / (answers + 1)
        pacer.sent(now)
        pacer.answered(now, limited=i < limited)


def test_up_to_two_percent_of_429s_pace_nothing_and_more_do() -> None:
    random_ = Pacer()
    _window(random_, 0.0, 100, 2)
    assert random_.wait(1.0) == 0
    assert random_.rate is None
    limited = Pacer()
    _window(limited, 0.0, 100, 3)
    limited.wait(1.0)
    assert limited.rate == pytest.approx(RATE_HEADROOM * 97)


def test_a_burst_that_met_429s_is_paced_at_no_less_than_half_of_it() -> None:
    pacer = Pacer()
    _window(pacer, 0.0, 100, 98)  # a flush of every person: the server took its burst of 2
    pacer.wait(1.0)
    assert pacer.rate == pytest.approx(50)


def test_while_paced_more_429s_halve_the_rate_at_most() -> None:
    pacer = Pacer()
    _window(pacer, 0.0, 100, 98)
    pacer.wait(1.0)
    _window(pacer, 1.0, 10, 10)  # paced at 50/s: ten attempts, all refused
    pacer.wait(2.0)
    assert pacer.rate == pytest.approx(25), "half the rate it paced at, not of the ten sent"


def test_a_window_that_held_attempts_back_without_429s_raises_the_rate() -> None:
    pacer = Pacer()
    _window(pacer, 0.0, 100, 98)
    assert pacer.wait(1.0) == 0
    pacer.sent(1.0)
    assert pacer.wait(1.001) > 0, "held back"
    pacer.answered(1.5, limited=False)
    pacer.wait(2.0)
    assert pacer.rate == pytest.approx(RATE_HEADROOM * 50)


def test_a_paced_attempt_waits_only_for_what_is_left_of_its_slot() -> None:
    pacer = Pacer()
    _window(pacer, 0.0, 100, 98)
    assert pacer.wait(1.0) == 0
    pacer.sent(1.0)
    assert pacer.wait(1.01) == pytest.approx(0.01), "half a slot (1/50 s) passed"


def test_after_an_idle_spell_a_paced_client_sends_a_tenth_of_a_second_at_once() -> None:
    pacer = Pacer()
    _window(pacer, 0.0, 100, 98)  # paced at 50/s
    pacer.wait(1.0)
    went = 0
    while pacer.wait(1.5) == 0:  # idle half a second: 25 slots, of which 5 may go at once
        pacer.sent(1.5)
        went += 1
    assert went == 5


def test_at_a_low_rate_a_paced_client_sends_one_at_a_time() -> None:
    pacer = Pacer()
    _window(pacer, 0.0, 100, 98)
    pacer.wait(1.0)
    for start in (1.0, 2.0, 3.0):
        _window(pacer, start, 1, 1)  # a refused attempt a window: 50, 25, 12.5 then 6.25/s
    pacer.wait(4.0)
    assert pacer.rate == pytest.approx(6.25)
    went = 0
    while pacer.wait(4.9) == 0:
        pacer.sent(4.9)
        went += 1
    assert went == 1
