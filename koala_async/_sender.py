"""One batch to an outcome: the sender performs what :class:`~._attempts.Attempts` decides
(send, wait, split, settle) and reports every outcome to the ledger; it decides nothing
itself.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from . import _http
from ._attempts import DROPS as _DROPS
from ._attempts import Attempts, Do, Hold, Step
from ._circuit import DEAD, OPEN, Circuit
from ._config import Config
from ._ledger import Ledger
from ._limiter import Limiter, Pacer
from ._loop import Loop
from ._queue import Batch, Target
from ._redact import redact_text
from ._reporter import Reporter
from ._retry import Verdict
from ._stats import DropReason

if TYPE_CHECKING:
    from ._spool import Spool

__all__ = ["_DROPS", "Sender"]

logger = logging.getLogger("koala_async")

_NEXT_STEP = "set KOALA_BASE_URL to a collector; run `koala-async collector` for a local one"


def _no_lending(change: int) -> None:
    pass


class Sender:
    """Delivers batches for every worker: the shared pacing state lives here."""

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        reporter: Reporter,
        limiter: Limiter,
        circuit: Circuit,
        backlog: Callable[[], bool],
        on_change: Callable[[], None],
        loop: Loop,
        spool: Spool | None = None,
    ) -> None:
        self._loop = loop
        self._config = config
        self._ledger = ledger
        self._reporter = reporter
        self._limiter = limiter
        self._circuit = circuit
        self._backlog = backlog
        self._on_change = on_change  # the circuit changed: wake whoever waits on it
        # by Target.account: prepared once, not per request
        self._routes = tuple(_http.Route(url, config.headers) for url in config.urls)
        self._changed = loop.event()
        self._deadline = loop.deadlines(config.timeout)  # one per request
        self._pacer = Pacer()  # the endpoint's rate, while it answers 429
        self.in_flight = 0
        self.deadline = math.inf  # set by close_by: waits are cut to fit before it
        self._closing = loop.event()
        self.last_error: str | None = None
        self.spool = spool  # with one, some outcomes park a batch on disk

    # Waiting

    def close_by(self, deadline: float) -> None:
        """Closing: every wait is cut to fit before ``deadline`` (``time.monotonic()``), those
        already under way included (a 30 s backoff begun just before the close would
        otherwise outlast the deadline, and its batch be dropped)."""
        self.deadline = deadline
        self._closing.set()
        self._wake()

    def _cut(self, wait: float, turns: int) -> float:
        """While closing, a wait leaves room for ``turns`` more attempts before the deadline."""
        if self.deadline == math.inf:
            return wait
        return max(0.0, min(wait, (self.deadline - time.monotonic()) / (turns + 1)))

    async def _sleep(self, wait: float, turns: int) -> None:
        """Wait ``wait`` seconds, cut by :meth:`_cut`, also when the close begins meanwhile.
        Past the close's deadline nothing is cut: the close stops the workers then, and a
        wait cut to nothing would spin, holding the event loop (and the close) until the
        server's rate let the batch go."""
        end = time.monotonic() + wait
        if self.deadline == math.inf:
            await self._loop.wait(self._closing, wait)
        now = time.monotonic()
        left = end - now
        if now < self.deadline:  # closing: leave room for more attempts before the deadline
            left = self._cut(left, turns)
        if left > 0:
            await self._loop.sleep(left)

    def _wake(self) -> None:
        """Wake every :meth:`_wait_for_change`."""
        self._changed.set()
        self._changed = self._loop.event()

    def _changed_now(self) -> None:
        self._wake()
        self._on_change()

    # Delivering

    async def send(
        self,
        http: httpx.AsyncClient,
        target: Target,
        batch: Batch,
        lend: Callable[[int], None] = _no_lending,
    ) -> None:
        """Deliver one of ``target``'s sealed batches and settle it; a 413 splits it in two
        and the first half goes now (the second is the target's next to send). ``lend`` is
        told -1 as the batch starts backing off and +1 when it is done: the runtime lends
        the worker's place meanwhile."""
        while True:
            end = await self._attempts(http, target, batch, lend)
            if end.do is Do.SPLIT:
                target.split(batch)
                continue
            self.settle(target, batch, end.reason, end.status, end.error)
            return

    async def _attempts(
        self,
        http: httpx.AsyncClient,
        target: Target,
        batch: Batch,
        lend: Callable[[int], None],
    ) -> Step:
        """Perform the batch's steps until it is to be settled or split."""
        run = Attempts(batch.size, self._config.retry, self._circuit, self._limiter, self._pacer)
        content = target.body(batch)
        while True:
            step = run.next(time.monotonic())
            if step.do is Do.SEND:
                await self._post(http, target.account, content, run)
            elif step.do is not Do.WAIT:
                return step
            elif step.hold is Hold.CIRCUIT:
                await self._loop.wait(self._changed, self._cut(step.seconds, step.turns))
            elif step.hold is Hold.RATE:
                await self._sleep(step.seconds, step.turns)
            else:
                logger.debug(
                    "%s; retrying a batch of %d in %.2fs", self.last_error, batch.size, step.seconds
                )
                lend(-1)
                try:
                    await self._sleep(step.seconds, step.turns)
                finally:
                    lend(1)

    async def _post(
        self, http: httpx.AsyncClient, account: bool, content: bytes, run: Attempts
    ) -> None:
        """Make one attempt and feed ``run`` what it met."""
        config, ledger = self._config, self._ledger
        ledger.requests += 1
        if run.sent > 1:
            ledger.retries += 1
        status: int | None = None
        header: str | None = None
        error: BaseException | None = None
        self.in_flight += 1
        started = time.monotonic()
        try:
            with self._deadline():  # the whole request, all told
                status, header = await _http.post(
                    http, self._routes[account], content, config.timeout
                )
        except TimeoutError:  # the deadline above: no (complete) answer in time
            error = TimeoutError(f"no complete answer within {config.timeout:g} s")
        except Exception as exc:  # transport errors, timeouts, a closed http_client, ...
            error = exc
        except BaseException:
            run.abandoned()
            raise
        finally:
            self.in_flight -= 1
        now = time.monotonic()
        ledger.request_seconds += now - started
        if error is not None or status is None or not 200 <= status < 300:
            self._record(status, error, account)
        if run.answered(now, now - started, status, header, error, self._backlog()):
            if run.verdict is Verdict.DELIVERED:
                logger.warning("%s answers again; sending what waited", config.shown_url)
            else:
                self._report_circuit()
            self._changed_now()
        elif run.probed:
            # The probe failed and the circuit stays open: the batches that found it
            # probing wait with no timer. Wake them, so one probes next even if this
            # batch is given up now (else nothing is ever sent again).
            self._wake()

    def _record(self, status: int | None, error: BaseException | None, account: bool) -> None:
        if self._circuit.state is DEAD:
            return  # keep the message that says the endpoint is gone, and what to do
        if status is not None:
            what = f"HTTP {status} from {'/accounts' * account}/batch"
        else:
            what = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        self.last_error = redact_text(what, self._config.key)

    def _report_circuit(self) -> None:
        """Say at once, and once, that the endpoint is down or gone, and what to do."""
        circuit, config = self._circuit, self._config
        url, error = config.shown_url, self.last_error
        if circuit.state is DEAD:
            if circuit.verdict is Verdict.UNAUTHORIZED:
                message = (
                    f"{url} refused the public API key twice ({error}); check public_api_key "
                    "(or KOALA_PUBLIC_API_KEY). Nothing more will be sent"
                )
            else:
                message = (
                    f"{url} is not Koala's ingestion API, or no longer exists ({error}); "
                    f"{_NEXT_STEP}. Nothing more will be sent"
                )
            self.last_error = message
            logger.error("%s", message)
        elif circuit.state is OPEN:
            self._reporter.warn(
                "circuit",
                f"cannot deliver to {url} ({error}); entries wait "
                + (
                    "in memory (up to max_queue_size)"
                    if self.spool is None
                    else f"in the spool {self.spool.options.path}"
                )
                + " while one request at a time tests it. If this is not a passing outage, "
                f"{_NEXT_STEP}",
            )

    def settle(
        self,
        target: Target,
        batch: Batch,
        reason: DropReason | None,
        status: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Count a batch's outcome, tell the reporter of a drop, then wake its waiters."""
        if self.spool is not None and self.spool.settled(target, batch, reason):
            return  # it waits on disk, for later in this run or the next
        if reason is not None and batch.size:
            self._reporter.dropped(target, batch, reason, status, error, self.last_error)
        self._ledger.settle(batch, reason)
