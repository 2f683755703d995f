"""The background machinery: workers that send, a ticker, a filer, the ``on_error`` pump,
the drain.

The filer files the queue's inbox (what calls added) into people's batches every
:data:`FILE_WITHIN` seconds, or at the loop's next turn when a call nudges it (64 entries
wait), and wakes workers for the batches that filled. When a period brought nothing it
sleeps, and the next call's entry wakes it. The ticker ages batches (every eighth of the
flush interval); when nothing is queued, in flight or on disk it sleeps too, woken by the
same entry: an idle client wakes nobody.

Workers are started as the ready FIFO needs them, up to the limiter's limit, each with its
own one-connection HTTP client; a worker with nothing to do waits in an idle list until
:meth:`Runtime.dispatch` wakes it. A worker above the limit (it was cut) stops after its
batch. Background tasks are started by :mod:`._loop` (asyncio's own tasks on asyncio, each in
a shielded scope in a task group elsewhere): cancelling the task that owns the client does not
reach them, and :meth:`stop` cancels each.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import httpx

from ._http import HttpFactory
from ._ledger import Ledger
from ._limiter import Limiter
from ._loop import Event, Flag, Loop, Tasks
from ._queue import FILE_EVERY, TICKS, Queue
from ._reporter import Reporter
from ._sender import Sender
from ._wire import top_up

__all__ = ["Runtime"]

logger = logging.getLogger("koala_async")

CALLBACK_GRACE = 1.0  # seconds on_error may take, past the deadline, to hear of the last drops
FILE_WITHIN = 0.05  # seconds an entry may wait in the queue's inbox before it is filed


class Runtime:
    """Owns the task group the workers, the ticker and the pump run in."""

    def __init__(
        self,
        queue: Queue,
        ledger: Ledger,
        sender: Sender,
        limiter: Limiter,
        reporter: Reporter,
        flush_interval: float,
        http: httpx.AsyncClient | HttpFactory,
        on_death: Callable[[], None],
        loop: Loop,
    ) -> None:
        self.loop = loop
        self._queue = queue
        self._ledger = ledger
        self._sender = sender
        self._limiter = limiter
        self._reporter = reporter
        self._flush_interval = flush_interval
        self._http = http
        self._on_death = on_death  # a task ended that nobody stopped: its event loop is gone
        self._clients: list[httpx.AsyncClient] = []  # ours, idle
        self._made: list[httpx.AsyncClient] = []  # ours, all: closed at the end
        self._idle: list[Flag] = []
        # Workers woken (or started) for a ready target that have not run yet: a dispatch
        # before they do must not wake another for the same target, who would find none.
        self._waking: set[Flag] = set()
        self._starting = 0
        self._cancels: set[Callable[[], object]] = set()
        self._tasks = 0
        self.workers = 0
        self._filing = loop.event()  # set: the queue's inbox waits to be filed
        self.sleeping = False  # the filer found nothing to file: it waits for a call's entry
        self._ticker_sleeps: Event | None = None  # set: the ticker has something to age
        self.stopping = False
        self._stopped: Event | None = None
        self._group: Tasks | None = None
        self._settled: Event | None = None  # set when nothing is pending
        self._room: Event | None = None  # set when pending falls to _room_at
        self._room_at = 0

    async def start(self) -> None:
        """Make the place for the background tasks (in the caller's task), start the ticker,
        the filer and the pump."""
        self._stopped = self.loop.event()
        self._group = group = await self.loop.tasks()
        self.spawn(self._tick_forever)
        self.spawn(self._file_forever)
        if self._reporter.open(self.loop):
            self._reporter.cancel = group.spawn(self._reporter.pump)

    def spawn(self, run: Callable[[], Awaitable[object]]) -> None:
        assert self._group is not None
        self._tasks += 1
        cancels = self._cancels
        mine: list[Callable[[], object]] = []  # its canceller, once started

        async def guarded() -> None:
            try:
                await run()
            except BaseException:
                if not self.stopping:  # cancelled from outside: its event loop is ending
                    self.stopping = True
                    self._on_death()
                raise
            finally:
                cancels.difference_update(mine)
                self._tasks -= 1
                if not self._tasks and self._stopped is not None:
                    self._stopped.set()

        mine.append(self._group.spawn(guarded))
        cancels.update(mine)

    # Filing and dispatch

    def added(self, waiting: int) -> bool:
        """A call made the ``waiting``-th entry of the queue's inbox, its first or a multiple
        of 64 (the caller checks that, cheaply). The first wakes the filer and the ticker if
        they sleep; the 64th has the inbox filed at the loop's next turn. Returns True from
        the 128th on: the inbox was not filed since the 64th, so the loop had no turn (a bare
        loop of calls; a request handler returns to it anyway), and the caller should yield."""
        if waiting == 1:
            if self.sleeping:
                self._nudge()
            self._wake_ticker()
            return False
        if waiting == FILE_EVERY:
            self._nudge()
            return False
        return True

    def _wake_ticker(self) -> None:
        if self._ticker_sleeps is not None:  # a check per inbox, not per call
            self._ticker_sleeps.set()
            self._ticker_sleeps = None

    def _nudge(self) -> None:
        self.sleeping = False
        self._filing.set()

    async def _file_forever(self) -> None:
        while True:
            await self.loop.wait(self._filing, FILE_WITHIN)
            if not self._filing.is_set() and not self._queue.inbox:
                # Nothing came for a whole period: sleep until a call's entry comes, rather
                # than wake 20 times a second in an idle process.
                self.sleeping = True
                await self._filing.wait()
            if self._filing.is_set():
                self._filing = self.loop.event()
            self.file()
            top_up()  # the calls' message ids, drawn here rather than in a call

    def file(self) -> None:
        """File the queue's inbox now, and wake workers for the targets that became ready."""
        queue = self._queue
        if queue.inbox and queue.intake():
            self.dispatch()

    def dispatch(self, taking: int = 0) -> None:
        """Ready targets are waiting: wake idle workers, or start new ones up to the limit,
        one for each target that no worker woken before (nor the caller, ``taking`` them)
        will take."""
        waiting = len(self._queue.ready) - len(self._waking) - self._starting - taking
        idle = self._idle
        while waiting > 0 and idle:
            flag = idle.pop()
            flag.set()
            self._waking.add(flag)
            waiting -= 1
        while waiting > 0 and self.workers < self._limiter.limit and not self.stopping:
            self.workers += 1
            self._starting += 1
            self.spawn(self._work)
            waiting -= 1

    def _lend(self, change: int) -> None:
        """A worker's batch starts backing off (-1), or is done (+1). Meanwhile its place
        under the limit serves other people's batches: one person's 30 s backoff must not
        hold up everyone else's delivery. Back, a worker over the limit retires after its
        batch, as when the limit is cut."""
        self.workers += change
        if change < 0:
            self.dispatch()

    def _client(self) -> httpx.AsyncClient:
        if not isinstance(self._http, HttpFactory):
            return self._http
        if self._clients:
            return self._clients.pop()
        client = self._http.new_client()
        self._made.append(client)
        return client

    async def _work(self) -> None:
        self._starting -= 1
        queue, sender = self._queue, self._sender
        http = self._client()
        try:
            while True:
                target = queue.take()
                if target is None:
                    flag = self.loop.flag()
                    self._idle.append(flag)
                    try:
                        await flag.wait()
                    finally:
                        self._wakened(flag)
                    continue
                batch = queue.seal(target)
                if batch is None:  # nothing left to send (parked to the spool meanwhile)
                    continue
                if queue.ready:  # the person's next batch may go beside this one
                    self.dispatch()
                try:
                    await sender.send(http, target, batch, self._lend)
                except Exception:  # a bug: the worker must outlive it, and the batch be counted
                    logger.exception("unexpected error delivering a batch; dropped")
                    sender.settle(target, batch, "rejected")
                queue.done(target, batch)
                self.after_settle()
                if self.workers > self._limiter.limit:  # the limit was cut: retire
                    break
                self.dispatch(taking=1)  # the limit may have grown, and the backlog with it
        finally:
            self.workers -= 1
            if isinstance(self._http, HttpFactory):
                self._clients.append(http)
        self.dispatch()  # an idle worker takes over what this one leaves

    def _wakened(self, flag: Flag) -> None:
        """An idle worker's wait ended: woken by a dispatch, by the stop, or cancelled."""
        if flag in self._waking:
            self._waking.discard(flag)
        else:
            self._idle.remove(flag)

    async def _tick_forever(self) -> None:
        ledger, queue = self._ledger, self._queue
        while True:
            await self.loop.sleep(self._flush_interval / TICKS)
            if queue.tick():  # files the inbox first
                self.dispatch()
            if not (ledger.pending or ledger.spooled or queue.inbox):
                # No batch to age, none in flight, none on disk: sleep until a call's entry
                # comes, rather than wake 8 times a flush interval for nothing. It comes
                # through the inbox (see added): a spool takes a call's entry only when memory
                # is full or older ones wait on disk (the ticker is awake then), or when the
                # endpoint is gone (nothing is sent then).
                self._ticker_sleeps = woken = self.loop.event()
                await woken.wait()

    def flush_waiting(self) -> None:
        """Make every target with queued entries ready now, and wake workers for them."""
        self._queue.schedule_waiting()
        self.dispatch()

    # Settling and waiting

    def after_settle(self) -> None:
        pending = self._ledger.pending
        if self._room is not None and pending <= self._room_at:
            self.wake_room()
        if self._settled is not None and not pending:
            self._settled.set()

    def wake_room(self) -> None:
        """Wake calls waiting for room (it came, or they should stop waiting)."""
        if self._room is not None:
            self._room.set()
            self._room = None

    async def room(self, at: int, timeout: float = math.inf) -> bool:
        """Wait until at most ``at`` entries are pending, or :meth:`wake_room`, for at most
        ``timeout`` seconds; False if that passed first."""
        if self._room is None:
            self._room, self._room_at = self.loop.event(), at
        else:
            self._room_at = min(self._room_at, at)
        if timeout == math.inf:
            await self._room.wait()
            return True
        return await self.loop.wait(self._room, timeout)

    async def settled(self) -> None:
        """Wait until nothing is pending."""
        while self._ledger.pending:
            self._settled = self.loop.event()
            await self._settled.wait()

    # The end

    async def stop(self) -> None:
        """Cancel the workers and the ticker, and wait until they are gone: after this,
        nothing else settles a batch."""
        self.stopping = True
        for cancel in list(self._cancels):
            cancel()
        for flag in self._idle:
            flag.set()
        if self._tasks:
            assert self._stopped is not None
            await self._stopped.wait()

    async def release(self) -> None:
        """Let the pump finish (within a grace period) and close our HTTP clients."""
        await self._reporter.close(CALLBACK_GRACE)
        for client in self._made:
            await client.aclose()

    async def leave(self) -> None:
        """Leave the place of the background tasks: every one is done by now."""
        if self._group is not None:
            group, self._group = self._group, None
            await group.leave()
