"""Telling people what went wrong: rate-limited log warnings, and the ``on_error`` pump.

``on_error`` runs in a task of its own, fed through an unbounded stream, so a slow or
failing callback never holds up a sender, and a callback that calls ``flush()`` cannot
deadlock the client.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._queue import Batch, Target
from ._stats import DeliveryFailure, DropReason
from ._validate import Who

__all__ = ["OnError", "Reporter"]

logger = logging.getLogger("koala_async")

OnError = Callable[[DeliveryFailure], "Awaitable[None] | None"]
"""What ``on_error`` may be: a function or coroutine function taking a DeliveryFailure."""

LOG_EVERY = 60.0  # seconds between repeated warnings of one kind
_QUIET = frozenset(("unauthorized", "gone", "shutdown_timeout"))  # said once, elsewhere


class Reporter:
    """Logs drops (each kind at most once a minute) and hands failures to ``on_error``."""

    def __init__(self, on_error: OnError | None) -> None:
        self._on_error = on_error
        self._logged: dict[str, tuple[float, int]] = {}
        self._send: MemoryObjectSendStream[DeliveryFailure] | None = None
        self._receive: MemoryObjectReceiveStream[DeliveryFailure] | None = None
        self.scope: anyio.CancelScope | None = None
        self.done: anyio.Event | None = None

    def open(self) -> bool:
        """Make the pump's stream; True if there is a callback to pump to."""
        if self._on_error is None:
            return False
        self._send, self._receive = anyio.create_memory_object_stream[DeliveryFailure](math.inf)
        # Made before the pump starts, so a close that comes first can still cancel it.
        self.scope, self.done = anyio.CancelScope(shield=True), anyio.Event()
        return True

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
        if self._send is not None:
            self._send.send_nowait(
                DeliveryFailure(
                    reason=reason,
                    kind="account" if target.account else "profile",
                    ids=target.ids(batch),
                    entries=[msgspec.json.decode(entry) for _, entry in batch.entries()],
                    status=status,
                    exception=error,
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
                exception=exception,
            )
        )

    def refused(self, failure: DeliveryFailure) -> None:
        """An entry was dropped at the call: hand it to ``on_error``, unless it is closed."""
        if self._send is not None:
            with contextlib.suppress(anyio.ClosedResourceError):  # a call after close
                self._send.send_nowait(failure)

    async def pump(self) -> None:
        """Run ``on_error`` for every failure until :meth:`close`; shielded by the caller."""
        assert self._receive is not None
        assert self.done is not None
        assert self.scope is not None
        with self.scope:
            async for failure in self._receive:
                await self._call(failure)
        self.done.set()

    async def _call(self, failure: DeliveryFailure) -> None:
        assert self._on_error is not None
        try:
            result = self._on_error(failure)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("the on_error callback raised; carrying on")

    async def close(self, grace: float) -> None:
        """No more failures: let the pump finish, for at most ``grace`` seconds."""
        if self._send is None or self.done is None:
            return
        self._send.close()
        with anyio.move_on_after(grace):
            await self.done.wait()
        if not self.done.is_set():
            if self.scope is not None:
                self.scope.cancel()
            logger.warning("on_error was too slow to hear of every drop at shutdown")
        if self._receive is not None:
            self._receive.close()
