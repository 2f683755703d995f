"""Admission: calls take the fast path (``pending < limit``) only while open; every other
state sends them to ask what to do, and the lifecycle moves only the ways it may."""

from __future__ import annotations

import pytest

from koala_async._admission import Admission, State


def _opened(size: int = 100) -> Admission:
    admission = Admission(size)
    admission.open()
    return admission


def test_a_new_admission_refuses_until_opened() -> None:
    admission = Admission(100)
    assert (admission.state, admission.limit, admission.taking) == (State.UNOPENED, 0, False)
    assert admission.before_close is State.UNOPENED
    admission.open()
    assert (admission.state, admission.limit, admission.taking) == (State.OPEN, 100, True)


def test_a_disabled_client_is_never_taking() -> None:
    admission = Admission(100, enabled=False)
    assert (admission.state, admission.limit, admission.taking) == (State.DISABLED, 0, False)
    assert admission.before_close is State.DISABLED


def test_spooling_leaves_the_fast_path_and_returns_to_it_when_the_disk_is_drained() -> None:
    admission = _opened()
    admission.spool(True)
    assert (admission.state, admission.limit, admission.taking) == (State.SPOOLING, 0, True)
    admission.spool(True)
    assert admission.state is State.SPOOLING
    admission.spool(False)
    assert (admission.state, admission.limit) == (State.OPEN, 100)
    admission.spool(False)
    assert (admission.state, admission.limit) == (State.OPEN, 100)


@pytest.mark.parametrize("on", [True, False])
def test_spooling_changes_nothing_unless_open_or_spooling(on: bool) -> None:
    admission = _opened()
    admission.dead()
    admission.spool(on)
    assert (admission.state, admission.limit) == (State.DEAD, 0)
    unopened = Admission(100)
    unopened.spool(on)
    assert (unopened.state, unopened.limit) == (State.UNOPENED, 0)


@pytest.mark.parametrize("spooling", [False, True])
def test_a_dead_endpoint_drops_calls_while_the_loop_still_takes_them(spooling: bool) -> None:
    admission = _opened()
    admission.spool(spooling)
    admission.dead()
    assert (admission.state, admission.limit, admission.taking) == (State.DEAD, 0, True)


def test_only_a_taking_client_can_become_dead() -> None:
    for before in (Admission(100), Admission(100, enabled=False)):
        state = before.state
        before.dead()
        assert before.state is state
    closing = _opened()
    closing.closing()
    closing.dead()
    assert closing.state is State.CLOSING


@pytest.mark.parametrize("dead", [False, True])
def test_the_close_remembers_what_it_began_from(dead: bool) -> None:
    admission = _opened()
    if dead:
        admission.dead()
    admission.closing()
    assert (admission.state, admission.limit, admission.taking) == (State.CLOSING, 0, False)
    assert admission.before_close is (State.DEAD if dead else State.OPEN)
    admission.closed()
    assert (admission.state, admission.limit, admission.taking) == (State.CLOSED, 0, False)


def test_a_forked_copy_takes_nothing() -> None:
    admission = _opened()
    admission.forked()
    assert (admission.state, admission.limit, admission.taking) == (State.FORKED, 0, False)


@pytest.mark.parametrize("closing", [False, True])
def test_an_ended_loop_orphans_an_open_or_closing_client(closing: bool) -> None:
    admission = _opened()
    if closing:
        admission.closing()
    admission.orphaned()
    assert (admission.state, admission.limit, admission.taking) == (State.ORPHANED, 0, False)


def test_an_ended_loop_leaves_a_closed_or_unopened_client_as_it_was() -> None:
    closed = _opened()
    closed.closing()
    closed.closed()
    closed.orphaned()
    assert closed.state is State.CLOSED
    unopened = Admission(100)
    unopened.orphaned()
    assert unopened.state is State.UNOPENED
