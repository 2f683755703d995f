"""The circuit's transitions and probe schedule, beyond tests/unit/test_decisions.py: probes
back off exponentially up to ``max_backoff``, refusals must agree to be final, and the return
value of ``answered`` says exactly when the state changed."""

from __future__ import annotations

import math

import pytest

from koala_async._circuit import CLOSED, DEAD, OPEN, THRESHOLD, Circuit
from koala_async._retry import Verdict


def _fail_probe(circuit: Circuit, now: float, verdict: Verdict = Verdict.UNREACHABLE) -> float:
    """Admit the probe at ``now``, answer it with a failure; return the wait for the next."""
    assert circuit.admit(now) is None
    circuit.answered(verdict, now=now, probe=True)
    wait = circuit.admit(now)
    assert wait is not None
    return wait


def test_a_new_circuit_is_closed_and_admits_every_request() -> None:
    circuit = Circuit(backoff=0.5, max_backoff=30)
    assert (circuit.state, circuit.verdict) == (CLOSED, None)
    assert [circuit.admit(0.0) for _ in range(3)] == [None, None, None]


def test_probes_back_off_twice_as_long_each_time_up_to_max_backoff() -> None:
    circuit = Circuit(backoff=1.0, max_backoff=5.0)
    circuit.answered(Verdict.UNREACHABLE, now=0.0, probe=False)
    assert circuit.admit(0.0) == pytest.approx(1.0)
    now, waits = 1.0, []
    for _ in range(4):
        wait = _fail_probe(circuit, now)
        waits.append(wait)
        now += wait
    assert waits == pytest.approx([2.0, 4.0, 5.0, 5.0])


def test_a_failed_probe_of_any_kind_keeps_the_circuit_open_and_backs_off() -> None:
    circuit = Circuit(backoff=1.0, max_backoff=60.0)
    circuit.answered(Verdict.UNREACHABLE, now=0.0, probe=False)
    assert _fail_probe(circuit, 1.0, Verdict.RETRY) == pytest.approx(2.0)
    assert circuit.state is OPEN
    assert circuit.verdict is Verdict.RETRY, "what keeps it open now"


def test_a_max_backoff_below_backoff_never_shortens_the_wait() -> None:
    circuit = Circuit(backoff=2.0, max_backoff=1.0)
    circuit.answered(Verdict.UNREACHABLE, now=0.0, probe=False)
    assert circuit.admit(0.0) == pytest.approx(2.0)
    assert _fail_probe(circuit, 2.0) == pytest.approx(2.0)


def test_with_no_backoff_probes_are_still_spaced_a_little_and_never_more() -> None:
    circuit = Circuit(backoff=0, max_backoff=30.0)
    circuit.answered(Verdict.UNREACHABLE, now=0.0, probe=False)
    first = circuit.admit(0.0)
    assert first is not None
    assert 0 < first <= 0.1, "spaced, so a refusal is confirmed apart, but no real wait"
    assert _fail_probe(circuit, first) == pytest.approx(first), "backoff=0 asks for no waits"


def test_the_probe_schedule_survives_a_very_long_outage() -> None:
    circuit = Circuit(backoff=0.5, max_backoff=30.0)
    circuit.answered(Verdict.UNREACHABLE, now=0.0, probe=False)
    now = 0.5
    for _ in range(1100):  # 2.0 ** 1100 would overflow a float
        now += _fail_probe(circuit, now)
    assert circuit.admit(now - 1.0) == pytest.approx(1.0)


def test_a_good_answer_closes_the_circuit_and_restarts_the_backoff() -> None:
    circuit = Circuit(backoff=1.0, max_backoff=60.0)
    circuit.answered(Verdict.UNREACHABLE, now=0.0, probe=False)
    _fail_probe(circuit, 1.0)
    _fail_probe(circuit, 3.0)
    assert circuit.admit(7.0) is None
    assert circuit.answered(Verdict.DELIVERED, now=7.0, probe=True)
    assert (circuit.state, circuit.verdict) == (CLOSED, None)
    circuit.answered(Verdict.UNREACHABLE, now=10.0, probe=False)
    assert circuit.admit(10.0) == pytest.approx(1.0), "the first wait again, not 8 s"


@pytest.mark.parametrize("verdict", [Verdict.REJECTED, Verdict.TOO_LARGE])
def test_an_answer_about_the_batch_alone_shows_the_endpoint_works(verdict: Verdict) -> None:
    circuit = Circuit(backoff=1.0, max_backoff=60.0)
    circuit.answered(Verdict.UNREACHABLE, now=0.0, probe=False)
    assert circuit.admit(1.0) is None
    assert circuit.answered(verdict, now=1.0, probe=True)
    assert circuit.state is CLOSED
    assert circuit.admit(1.0) is None


def test_while_the_probe_is_out_everyone_else_waits_for_its_answer() -> None:
    circuit = Circuit(backoff=1.0, max_backoff=60.0)
    circuit.answered(Verdict.UNREACHABLE, now=0.0, probe=False)
    assert circuit.admit(5.0) is None
    assert circuit.admit(50.0) == math.inf
    circuit.answered(Verdict.UNREACHABLE, now=51.0, probe=False)  # an older request's answer
    assert circuit.admit(500.0) == math.inf, "only the probe's answer lets the next one go"


def test_an_abandoned_probe_lets_another_request_probe() -> None:
    circuit = Circuit(backoff=1.0, max_backoff=60.0)
    circuit.answered(Verdict.UNREACHABLE, now=0.0, probe=False)
    assert circuit.admit(1.0) is None
    circuit.abandon()
    assert circuit.admit(1.0) is None
    assert circuit.state is OPEN


def test_answered_says_true_only_when_the_state_changed() -> None:
    circuit = Circuit(backoff=1.0, max_backoff=60.0)
    assert not circuit.answered(Verdict.DELIVERED, now=0.0, probe=False)
    assert not circuit.answered(Verdict.RETRY, now=0.0, probe=False)
    assert circuit.answered(Verdict.UNREACHABLE, now=0.0, probe=False)
    assert circuit.verdict is Verdict.UNREACHABLE
    assert not circuit.answered(Verdict.UNREACHABLE, now=0.5, probe=False)
    assert not circuit.answered(Verdict.RATE_LIMITED, now=0.5, probe=False)
    assert circuit.answered(Verdict.DELIVERED, now=1.0, probe=False)


def test_a_rate_limit_neither_opens_nor_closes_nor_breaks_a_run_of_failures() -> None:
    circuit = Circuit(backoff=1.0, max_backoff=60.0)
    for _ in range(THRESHOLD - 1):
        circuit.answered(Verdict.RETRY, now=0.0, probe=False)
    assert not circuit.answered(Verdict.RATE_LIMITED, now=0.0, probe=False)
    assert circuit.state is CLOSED
    assert circuit.answered(Verdict.RETRY, now=0.0, probe=False)
    assert circuit.state is OPEN


def test_a_run_of_failures_opens_the_circuit_on_exactly_its_last() -> None:
    circuit = Circuit(backoff=1.0, max_backoff=60.0)
    changed = [circuit.answered(Verdict.RETRY, now=0.0, probe=False) for _ in range(THRESHOLD)]
    assert changed == [False] * (THRESHOLD - 1) + [True]
    assert circuit.admit(0.0) == pytest.approx(1.0)


def test_two_different_refusals_do_not_confirm_each_other() -> None:
    circuit = Circuit(backoff=0, max_backoff=0)
    circuit.answered(Verdict.UNAUTHORIZED, now=0.0, probe=False)
    circuit.answered(Verdict.GONE, now=1.0, probe=False)
    assert (circuit.state, circuit.verdict) == (OPEN, Verdict.GONE)
    assert circuit.answered(Verdict.GONE, now=2.0, probe=False)
    assert (circuit.state, circuit.verdict) == (DEAD, Verdict.GONE)


def test_a_server_error_between_two_refusals_means_they_are_not_confirmed() -> None:
    circuit = Circuit(backoff=0, max_backoff=0)
    circuit.answered(Verdict.UNAUTHORIZED, now=0.0, probe=False)
    circuit.answered(Verdict.RETRY, now=1.0, probe=False)
    circuit.answered(Verdict.UNAUTHORIZED, now=2.0, probe=False)
    assert circuit.state is OPEN


def test_a_certificate_error_kills_the_circuit_at_once_for_good() -> None:
    circuit = Circuit(backoff=1.0, max_backoff=60.0)
    circuit.dead_now(Verdict.GONE)
    assert (circuit.state, circuit.verdict) == (DEAD, Verdict.GONE)
    assert circuit.admit(1e9) == math.inf
    assert not circuit.answered(Verdict.DELIVERED, now=1.0, probe=True)
    assert not circuit.answered(Verdict.UNAUTHORIZED, now=1.0, probe=False)
    assert (circuit.state, circuit.verdict) == (DEAD, Verdict.GONE)
