"""Celery integration: flush, bounded, when a worker process ends (and after tasks, if asked).

::

    from celery import Celery
    from koala_async import KoalaSyncClient
    from koala_async.celery import connect

    app = Celery("tasks", broker="redis://localhost:6379/0")
    koala = KoalaSyncClient(user_agent="acme-worker/1.0")
    connect(koala)

    @app.task
    def charge(email: str) -> None:
        koala.track("Charged", email=email)

A client made at import time is safe in the prefork pool: its delivery thread starts on the
first call in each worker process (as if made in ``worker_process_init``). What Celery
does not do is run ``atexit`` in those processes, so ``connect`` closes the client on
``worker_process_shutdown`` (and, for the solo and thread pools, ``worker_shutdown``),
within ``timeout``.
"""

from __future__ import annotations

from typing import Any

from ._optional import require

require("celery", "celery")

from celery import signals  # type: ignore[import-untyped]  # noqa: E402 - after the check

from ._sync import KoalaSyncClient  # noqa: E402

__all__ = ["connect"]


def connect(
    client: KoalaSyncClient, *, flush_after_task: bool = False, timeout: float | None = None
) -> None:
    """Close ``client`` when a worker process shuts down; optionally flush after each task.

    Args:
        client: The client your tasks use.
        flush_after_task: Wait, after every task, until what it tracked is delivered (at
            most ``timeout``): for workers that may be killed without a warm shutdown.
        timeout: Seconds the close (or a flush) may take; default ``shutdown_timeout``.
            Keep it below the time your platform gives a worker to stop.
    """

    def close(**_: Any) -> None:
        client.close(timeout)

    signals.worker_process_shutdown.connect(close, weak=False)
    signals.worker_shutdown.connect(close, weak=False)
    if flush_after_task:

        def flush(**_: Any) -> None:
            client.flush(timeout)

        signals.task_postrun.connect(flush, weak=False)
