"""Admission: whether a call's entry may join the queue, and why not.

One object holds what was a sentinel spread over the client: the lifecycle state and the
``limit`` a call compares the pending count with (its hot path is that one compare). The
engine is its only writer; any thread may read it (the sync client's callers do): each
transition writes ``state`` and ``limit`` as plain attribute stores, so a reader sees one
state or the next, never a torn one that lets an entry in after the close began.
"""

from __future__ import annotations

import enum

__all__ = ["Admission", "State"]


class State(enum.Enum):
    """Where an engine is in its life, as calls see it."""

    UNOPENED = "unopened"  # built; calls are refused until it is opened
    OPEN = "open"  # taking calls (up to max_queue_size pending; then on_full decides)
    SPOOLING = "spooling"  # open, but new entries go to disk: older ones wait there
    DEAD = "dead"  # open, but the endpoint refused the key or is gone: calls are dropped
    CLOSING = "closing"  # the close is draining the queue; calls are refused
    CLOSED = "closed"  # done for good; a client cannot be reopened
    FORKED = "forked"  # this process is a fork of the one that opened it
    ORPHANED = "orphaned"  # the event loop it was opened in has ended
    DISABLED = "disabled"  # enabled=False: calls are checked, and nothing is kept


_TAKING = frozenset((State.OPEN, State.SPOOLING, State.DEAD))


class Admission:
    """The state, and the pending count at which a call leaves the fast path.

    ``limit`` is ``size`` while open, and 0 otherwise (even spooling or dead): a call that
    finds ``pending >= limit`` asks :attr:`state` what to do, which is the rare path.
    """

    __slots__ = ("before_close", "limit", "size", "state")

    def __init__(self, size: int, *, enabled: bool = True) -> None:
        self.size = size
        self.state = State.UNOPENED if enabled else State.DISABLED
        self.before_close = self.state  # what the close began from (open, dead, spooling)
        self.limit = 0

    @property
    def taking(self) -> bool:
        """Open (spooling or dead included): the owner's loop runs and takes calls."""
        return self.state in _TAKING

    def open(self) -> None:
        self._set(State.OPEN)

    def spool(self, on: bool) -> None:
        """Send new entries to disk (on), or to memory again once the disk is drained."""
        if on and self.state is State.OPEN:
            self._set(State.SPOOLING)
        elif not on and self.state is State.SPOOLING:
            self._set(State.OPEN)

    def dead(self) -> None:
        if self.state in _TAKING:
            self._set(State.DEAD)

    def closing(self) -> None:
        self.before_close = self.state
        self._set(State.CLOSING)

    def closed(self) -> None:
        self._set(State.CLOSED)

    def forked(self) -> None:
        self._set(State.FORKED)

    def orphaned(self) -> None:
        if self.state in _TAKING or self.state is State.CLOSING:
            self._set(State.ORPHANED)

    def _set(self, state: State) -> None:
        # Closing a door: limit first, so no reader passes the compare under the new state.
        if state is not State.OPEN:
            self.limit = 0
        self.state = state
        if state is State.OPEN:
            self.limit = self.size
