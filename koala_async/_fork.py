"""The one at-fork hook: what must be redone in a forked child (gunicorn ``--preload``,
uWSGI, Celery prefork, ``multiprocessing`` with fork), each module's part registered here
in import order (the ids first, then the engines, then the sync clients' threads)."""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["in_child"]

_steps: list[Callable[[], None]] = []


def in_child(step: Callable[[], None]) -> Callable[[], None]:
    """Register ``step`` to run in a forked child, before any other code there."""
    _steps.append(step)
    return step


def _after_fork_in_child() -> None:
    for step in _steps:
        step()


os.register_at_fork(after_in_child=_after_fork_in_child)
