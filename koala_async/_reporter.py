"""Telling people what went wrong: rate-limited log warnings, and the ``on_error`` pump.

``on_error`` runs in a task of its own, fed through a queue, so a slow or failing callback
never holds up a sender, and a callback that calls ``flush()`` cannot deadlock the client.
The queue holds :data:`MAX_WAITING` failures at most (not few: a loop of calls on a dead
endpoint drops one per call without a turn of the event loop); beyond, a failure is not
built, only counted (:attr:`Reporter.missed`), and a warning says so once (a 10 ms
callback during an outage at 2,800 calls/s once grew it by 150 MB in 40 s).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from ._queue import Batch, Target
from ._redact import bare
from ._stats import DeliveryFailure, DropReason
from ._validate import Who

if TYPE_CHECKING:
    from ._loop import Event, Loop

__all__ = ["OnError", "Reporter"]

logger = logging.getLogger("koala_async")

OnError = Callable[[DeliveryFailure], "Awaitable[None] | None"]
"""What ``on_error`` may be: a function or coroutine function taking a DeliveryFailure."""

LOG_EVERY = 60.0  # seconds between repeated warnings of one kind
MAX_WAITING = 10_000
"""Failures that may wait for ``on_error`` at once; later ones are counted, not handed on."""
_QUIET = frozenset(("unauthorized", "gone", "shutdown_timeout"))  # said once, elsewhere


class Reporter:
    """Logs drops (each kind at most once a minute) and hands failures to ``on_error``."""

    def __init__(self, on_error: OnError | None) -> None:
        self._on_error = on_error
        self._logged: dict[str, tuple[float, int]] = {}
        self._failures: deque[DeliveryFailure] | None = None  # None: no on_error, or not open
        self._loop: Loop | None = None
        self._came: Event | None = None  # set: failures came, or the close
        self._closed = False
        self.missed = 0  # failures not handed to on_error: MAX_WAITING were waiting for it
        self.done: Event | None = None
        self.cancel: Callable[[], object] | None = None  # stops the pump (set by its starter)

    def open(self, loop: Loop) -> bool:
        """Make the pump's queue; True if there is a callback to pump to."""
        if self._on_error is None:
            return False
        self._loop = loop
        self._failures = deque()
        self._came, self.done = loop.event(), loop.event()
        return True

    def _heard(self) -> bool:
        """Whether a failure would reach ``on_error``: if not, none is even built. One that
        finds :data:`MAX_WAITING` failures waiting is counted as missed instead."""
        if self._failures is None or self._closed:
            return False
        if len(self._failures) < MAX_WAITING:
            return True
        self.missed += 1
        if self.missed == 1:
            logger.warning(
                "on_error is slower than the drops it hears of: %d failures wait for it, and "
                "later ones are not handed to it while that many wait (their entries are "
                "still counted in stats().dropped and logged); make on_error quick, e.g. "
                "put each failure on a queue of your own",
                MAX_WAITING,
            )
        return False

    def warn(self, kind: str, message: str) -> None:
        """Log a warning: the first of each kind at once, repeats once a minute at most."""
        now = time.monotonic()
        last, suppressed = self._logged.get(kind, (-math.inf, 0))
        if now - last < LOG_EVERY:
            self._logged[kind] = (last, suppressed + 1)
            return
        self._logged[kind] = (now, 0)
        more = f" ({suppressed} more since the last warning)" if suppressed else ""
        logger.warning("%s%s", message, more)

    def dropped(
        self,
        target: Target,
        batch: Batch,
        reason: DropReason,
        status: int | None,
        error: BaseException | None,
        detail: str | None,
    ) -> None:
        """A batch was given up: log it (rate-limited) and queue it for ``on_error``."""
        if reason not in _QUIET:
            count = batch.size
            self.warn(
                reason,
                f"dropped {count} {'entry' if count == 1 else 'entries'} ({reason}): "
                f"{detail or reason}",
            )
        if self._heard():
            self.refused(
                DeliveryFailure(
                    reason=reason,
                    kind="account" if target.account else "profile",
                    ids=target.ids(batch),
                    entries=[msgspec.json.decode(entry) for _, entry in batch.entries()],
                    status=status,
                    exception=None if error is None else bare(error),
                )
            )

    def dropped_entry(
        self,
        reason: DropReason,
        raw: bytes,
        who: Who,
        ip: str | None,
        exception: BaseException | None = None,
    ) -> None:
        """One entry was dropped outside any batch (at the call, or unfiled): hand it to
        ``on_error`` with its ids (and its ip, which would have gone top-level)."""
        if not self._heard():  # decode nothing: drops in an outage come at the calls' rate
            return
        field, key, secondary_name, secondary = who
        ids = {field: key} if secondary is None else {field: key, secondary_name: secondary}
        if ip is not None:
            ids["ip"] = ip
        self.refused(
            DeliveryFailure(
                reason=reason,
                kind="account" if field in ("domain", "account_id") else "profile",
                ids=ids,
                entries=[msgspec.json.decode(raw)],
                exception=None if exception is None else bare(exception),
            )
        )

    def refused(self, failure: DeliveryFailure) -> None:
        """Hand a failure to ``on_error``, if anyone hears (not after the close)."""
        if self._heard():
            assert self._failures is not None
            assert self._came is not None
            self._failures.append(failure)
            self._came.set()

    async def pump(self) -> None:
        """Run ``on_error`` for every failure until :meth:`close`, in a task of its own."""
        failures, loop = self._failures, self._loop
        assert failures is not None
        assert loop is not None
        assert self.done is not None
        while True:
            while failures:
                await self._call(failures.popleft())
            if self._closed:
                break
            self._came = came = loop.event()
            await came.wait()
        self.done.set()

    async def _call(self, failure: DeliveryFailure) -> None:
        assert self._on_error is not None
        import inspect  # ~4 ms to import: only once a callback is called

        try:
            result = self._on_error(failure)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("the on_error callback raised; carrying on")

    async def close(self, grace: float) -> None:
        """No more failures: let the pump finish, for at most ``grace`` seconds."""
        if self._loop is None or self.done is None or self._came is None:
            return
        self._closed = True
        self._came.set()
        if not await self._loop.wait(self.done, grace):
            if self.cancel is not None:
                self.cancel()
            logger.warning("on_error was too slow to hear of every drop at shutdown")
        if self.missed:
            logger.warning("on_error was not handed %d failures: it was too slow", self.missed)
