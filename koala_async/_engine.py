"""The engine: the one owner of a client's delivery machinery and its lifecycle.

Both faces drive it: :class:`~koala_async.KoalaClient` in the caller's event loop, and
:class:`~koala_async.KoalaSyncClient` on an event loop in a thread of its own. Its door is
small and documented: :meth:`Engine.open`, :meth:`Engine.offer` (an item built by the
intake), :meth:`Engine.refuse_call`, :meth:`Engine.flush`, :meth:`Engine.close` and
:meth:`Engine.stats`. Everything else is built here, once, with its collaborators handed in:

- :mod:`._admission` says whether an entry may join the queue (one writer: this engine);
- :mod:`._queue` keeps per-person batches and the ready order; :mod:`._ledger` the counters
  (their only writer);
- :mod:`._retry`, :mod:`._limiter` and :mod:`._circuit` decide (pure, no I/O);
- :mod:`._sender` performs those decisions for one batch; :mod:`._runtime` runs the workers,
  the ticker and the drain; :mod:`._reporter` logs and calls ``on_error``; :mod:`._loop`
  gives them what they await (asyncio's own on asyncio, anyio's on trio);
- :mod:`._spool` (opt-in) keeps accepted entries on disk until they are settled.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import weakref
from _thread import get_ident as _get_ident
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any

from ._admission import Admission, State
from ._attempts import DROPS as _DROPS
from ._circuit import CLOSED, DEAD, Circuit
from ._exceptions import ClientClosedError, DeliveryError, QueueFullError, ValidationError
from ._fork import in_child
from ._ledger import Ledger
from ._limiter import Limiter
from ._queue import FILE_EVERY, MAX_BLOCK, Item, Queue, Waiter
from ._reporter import OnError, Reporter
from ._stats import DropReason, FlushResult, Stats

if TYPE_CHECKING:
    import httpx

    from ._config import Config
    from ._intake import Built, Refusal
    from ._loop import Loop
    from ._runtime import Runtime
    from ._sender import Sender
    from ._spool import Spool, SpoolOptions
    from ._validate import Who

__all__ = ["Engine"]

logger = logging.getLogger("koala_async")

_SPOOL_POLL = 0.05  # seconds a flush waits before it looks for entries read back from disk
_INITIAL_LIMIT = 32  # requests in flight at first; the limiter grows it as the backlog asks

_open_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


class _Dropped:
    """What :meth:`Engine.offer` returns for an entry dropped at the call (dead endpoint,
    full queue): awaiting it gives False, as a wait for room that ended in a drop does, and
    the call returns None instead of an id that will never arrive."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, bool]:
        return False
        yield  # a generator that never suspends


DROPPED = _Dropped()

Waiting = Awaitable["bool | None"]
"""What a call awaits after an offer: a yield (None), or the outcome of a wait for room
(False: the entry was dropped)."""


@in_child
def _after_fork_in_child() -> None:
    for engine in _open_engines:
        engine.admission.forked()


class _RunningIn:
    """Which thread runs an event loop now, read as asyncio's loops keep it (their
    ``_thread_id``: the running thread, None while stopped), for loops that keep it
    otherwise (uvloop, trio): the opening thread while ``is_running()`` says so."""

    __slots__ = ("_is_running", "_opener")

    def __init__(self, opener: int, is_running: Callable[[], bool] | None) -> None:
        self._opener = opener
        self._is_running = is_running

    @property
    def _thread_id(self) -> int | None:
        if self._is_running is None or self._is_running():  # trio: the thread alone
            return self._opener
        return None


# What the loop check calls, bound by the first open (:func:`_load`): :func:`._loop.current`.
_current_loop: Callable[[], Loop] | None = None


def _load() -> Callable[[], Loop]:
    """Import what an open engine runs on and bind the names the calls use.

    Nothing of it is imported with koala_async (asyncio, anyio, httpx and the delivery
    modules: ~90 ms in a bare interpreter, more than Segment's whole import): a script that
    only builds a client, or a sync client before its first call, never pays it. In an
    async app the event loop's modules are loaded already, and httpx is the rest.
    """
    global _current_loop
    if _current_loop is None:
        from . import _loop

        _current_loop = _loop.current
    return _current_loop


def preload(spool: bool) -> None:
    """Import, in the calling thread, all that an engine's open imports (``spool``: and
    what opening a spool needs).

    :class:`~koala_async.KoalaSyncClient` calls it before it starts its engine's thread: an
    import still under way in that thread when the process forks (gunicorn ``--preload``,
    Celery's prefork pool, a call just before ``os.fork()``) would leave the child a module
    half initialised for ever, and its own engine could not start.
    """
    import importlib

    _load()
    needed = ["koala_async._http", "koala_async._runtime", "koala_async._sender"]
    if spool:
        # The spool waits on anyio's events, whose backend is imported at their first use.
        needed += ["anyio.to_thread", "anyio._backends._asyncio", "koala_async._spool"]
    for name in needed:
        importlib.import_module(name)


class Engine:
    """One client's queue, counters, decisions, workers and spool, opened and closed once."""

    def __init__(
        self,
        config: Config,
        *,
        http_client: httpx.AsyncClient | None,
        on_error: OnError | None,
        spool: SpoolOptions | None,
        face: str,
    ) -> None:
        if http_client is not None and not _is_httpx_client(http_client):
            raise ValidationError(
                f"http_client must be an httpx.AsyncClient, got {type(http_client).__name__}"
            )
        if on_error is not None and not callable(on_error):
            raise ValidationError("on_error must be a function taking a DeliveryFailure")
        self.config = config
        self.face = face  # "KoalaClient" or "KoalaSyncClient", for messages
        self.admission = Admission(config.max_queue_size, enabled=config.enabled)
        self.ledger = Ledger()
        self.reporter = Reporter(on_error)
        self._spool_options = spool
        self._spool: Spool | None = None
        self._http = http_client
        self._parked = 0  # calls that parked their entry on disk
        self._token: object = None
        # The hot path's test that a call comes from the loop the engine was opened in: that
        # loop runs, in the calling thread (a thread runs one loop at a time). An asyncio
        # loop's own record of its thread is one attribute read; asking asyncio for the
        # running loop costs a getpid() system call per call on 3.11.
        self._running_in: Any = _RunningIn(0, None)
        self._queue = Queue(self._unfiled)
        self._limiter = Limiter(config.max_concurrent_requests, initial=_INITIAL_LIMIT)
        self._circuit = Circuit(config.retry.backoff, config.retry.max_backoff)
        self._sender: Sender | None = None
        self._runtime: Runtime | None = None

    @property
    def state(self) -> State:
        return self.admission.state

    @property
    def spool_path(self) -> str | None:
        """The spool's file, if the engine has one."""
        return None if self._spool_options is None else self._spool_options.path

    # Lifecycle

    async def open(self) -> None:
        """Start the workers (and the spool) in the running event loop."""
        admission = self.admission
        if admission.state not in (State.UNOPENED, State.DISABLED):
            raise ClientClosedError(
                f"a {self.face} can be entered once; create a new one to send again"
            )
        if admission.state is State.DISABLED:
            return
        config = self.config
        loop = _load()()
        from ._http import HttpFactory
        from ._runtime import Runtime
        from ._sender import Sender

        self._token = token = loop.token()
        thread = _get_ident()
        if getattr(token, "_thread_id", None) == thread:  # asyncio's loops (not uvloop)
            self._running_in = token
        else:
            self._running_in = _RunningIn(thread, getattr(token, "is_running", None))
        held = 0 if self._spool_options is None else await self._open_spool(self._spool_options)
        self._sender = Sender(
            config,
            self.ledger,
            self.reporter,
            self._limiter,
            self._circuit,
            backlog=lambda: bool(self._queue.ready),
            on_change=self._circuit_changed,
            loop=loop,
            spool=self._spool,
        )
        http = self._http or HttpFactory(config.base_url, config.timeout)
        self._runtime = Runtime(
            self._queue,
            self.ledger,
            self._sender,
            self._limiter,
            self.reporter,
            config.flush_interval,
            http,
            on_death=admission.orphaned,
            loop=loop,
        )
        await self._runtime.start()
        if self._spool is not None:
            self._runtime.spawn(self._spool.run)
        _open_engines.add(self)
        admission.open()
        if held:
            admission.spool(True)  # what waits on disk is older: new entries queue behind it

    async def _open_spool(self, options: SpoolOptions) -> int:
        """Open the spool file and take over what an earlier run left in it (returned)."""
        import dataclasses

        from ._spool import Spool, SpooledQueue, Writer  # and sqlite3: only with a spool

        writer = Writer(options.path, options.directory, options.max_bytes)
        held = await writer.open()
        assert writer.file is not None
        directory = options.path if options.directory else None
        if options.directory:  # the file this process took in the directory
            self._spool_options = options = dataclasses.replace(
                options, path=writer.path, directory=False
            )
        self._queue = queue = SpooledQueue(writer.file.last_seq, self._unfiled)
        self._spool = Spool(
            options,
            writer,
            queue,
            self.ledger,
            self.reporter,
            self.config.max_queue_size,
            overflow=self.admission.spool,
            loaded=self._spool_loaded,
            directory=directory,
        )
        if held:
            self.ledger.recover(held)
            logger.info("%d entries wait in the spool %s: sending them first", held, options.path)
        return held

    def _spool_loaded(self, ready: bool) -> None:
        """Entries came back from the spool: they waited already, so send them now."""
        runtime = self._runtime
        if runtime is not None:
            runtime.flush_waiting()

    async def close(self, timeout: float | None = None) -> FlushResult:
        """Stop taking calls and deliver everything queued, within ``timeout``; see
        :meth:`KoalaClient.aclose`."""
        admission = self.admission
        if not admission.taking:
            if admission.state in (State.UNOPENED, State.ORPHANED, State.DISABLED):
                await self._abandon()
            return self._result(0, 0)
        self._check_loop()
        admission.closing()
        ledger, runtime, sender = self.ledger, self._runtime, self._sender
        delivered, dropped = ledger.delivered, ledger.dropped_total
        deadline = self.config.shutdown_timeout if timeout is None else float(timeout)
        cancelled: BaseException | None = None
        try:
            if runtime is not None and sender is not None:
                sender.close_by(time.monotonic() + deadline)
                self._queue.eager = True
                runtime.flush_waiting()
                spool = self._spool
                cancelled = await runtime.loop.shielded(
                    runtime.settled if spool is None else lambda: spool.drained(runtime.settled),
                    deadline,
                )

                async def stop() -> None:
                    await runtime.stop()
                    self._drop_leftovers(sender)
                    if spool is not None:
                        await spool.close()
                    await runtime.release()

                cancelled = await runtime.loop.shielded(stop, math.inf) or cancelled
                await runtime.leave()
        finally:
            admission.closed()
            _open_engines.discard(self)
        lost = ledger.dropped["shutdown_timeout"]
        if lost:
            circuit = self._circuit
            why = f": {sender.last_error}" if sender is not None and sender.last_error else ""
            hint = (
                f"; {self.config.shown_url} was not answering"
                if circuit.state is not CLOSED
                else "; raise shutdown_timeout to give delivery more time"
            )
            logger.warning(
                "%d %s not delivered within the shutdown deadline of %gs%s%s",
                lost,
                "entry was" if lost == 1 else "entries were",
                deadline,
                why,
                hint,
            )
        if ledger.spooled and self._spool is not None:
            logger.info(
                "%d entries wait in the spool %s for the next client opened on it",
                ledger.spooled,
                self._spool.options.path,
            )
        if cancelled is not None:
            raise cancelled  # the owner was cancelled while we flushed: tell it, now we are done
        return self._result(delivered, dropped)

    def _result(self, delivered: int, dropped: int) -> FlushResult:
        """What a flush or close achieved, given the counters when it began."""
        ledger = self.ledger
        return FlushResult(
            delivered=ledger.delivered - delivered,
            dropped=ledger.dropped_total - dropped,
            pending=ledger.pending + ledger.spooled,
            spooled=ledger.spooled,
        )

    def _drop_leftovers(self, sender: Sender) -> None:
        """After the deadline: count what is left as dropped (and report it)."""
        for target, batch in list(self._queue.batches()):
            sender.settle(target, batch, "shutdown_timeout")
        self._queue.clear()

    async def _abandon(self) -> None:
        """Close an engine that was never opened, or whose event loop has ended."""
        orphaned = self.admission.state is State.ORPHANED
        self.admission.closed()
        if orphaned and self._spool is not None:
            self._spool.abandon()
        if orphaned:
            for _target, batch in list(self._queue.batches()):
                self.ledger.settle(batch, "shutdown_timeout")
            self._queue.clear()

    def _check_loop(self) -> None:
        """Refuse use from an event loop other than the one the engine was opened in: its
        entries would wait for that loop, which may never run them."""
        if self._token is None:
            return
        if not self.admission.taking:  # closed, forked, orphaned: check_open says which
            self.check_open()
        assert _current_loop is not None  # bound by the open that set the token
        try:
            token = _current_loop().token()
        except RuntimeError:  # no event loop runs this call: a coroutine driven by hand
            token = None
        if token != self._token:
            raise ClientClosedError(_OTHER_LOOP.format(face=self.face))

    async def flush(self, timeout: float | None = None) -> FlushResult:
        """Send everything queued now and wait, at most ``timeout`` seconds, for it; see
        :meth:`KoalaClient.flush`."""
        self.check_open()
        self._check_loop()
        ledger = self.ledger
        delivered, dropped = ledger.delivered, ledger.dropped_total
        runtime = self._runtime
        if runtime is not None:
            limit = self.config.shutdown_timeout if timeout is None else timeout
            await self._wait_flushed(runtime, limit)
        if self._circuit.state is DEAD:
            assert self._sender is not None
            raise DeliveryError(self._sender.last_error or "the endpoint is gone")
        return self._result(delivered, dropped)

    async def _wait_flushed(self, runtime: Runtime, limit: float) -> None:
        """Make every queued batch due and wait, within ``limit`` seconds, until they are
        settled; with a spool, also for the entries on disk by now (recovered at open, or
        parked), read back as room comes, as for any accepted entry."""
        spool = self._spool
        until = 0 if spool is None else spool.parked_seq
        end = time.monotonic() + limit
        while True:
            done = runtime.loop.event()
            waiter = Waiter(done)
            for _, batch in self._queue.batches():
                waiter.add(batch)
            runtime.flush_waiting()
            left = end - time.monotonic()
            if spool is None or not spool.behind_seq(until):
                if waiter.left:
                    await runtime.loop.wait(done, max(left, 0.0))
                return
            if left <= 0:
                return
            spool.wake()  # read the next entries back as soon as there is room
            await runtime.loop.wait(done, min(left, _SPOOL_POLL))

    def flush_waiting(self) -> None:
        """Make every partial batch due now (a flush that cannot wait for its outcome)."""
        if self._runtime is not None:
            self._runtime.flush_waiting()

    def stats(self) -> Stats:
        """A snapshot of the counters; see :class:`Stats`."""
        ledger = self.ledger
        return Stats(
            accepted=ledger.accepted,
            delivered=ledger.delivered,
            dropped=dict(ledger.dropped),
            pending=ledger.pending + ledger.spooled,
            requests=ledger.requests,
            retries=ledger.retries,
            last_error=None if self._sender is None else self._sender.last_error,
            circuit=self._circuit.state,
            concurrency=self._limiter.limit,
            spooled=ledger.spooled,
            recovered=ledger.recovered,
            capacity=self.config.max_queue_size,
            in_flight=0 if self._sender is None else self._sender.in_flight,
            request_seconds=ledger.request_seconds,
        )

    def check_open(self) -> None:
        """Raise :class:`ClientClosedError`, naming the fix, unless calls are taken."""
        state = self.admission.state
        if state is State.DISABLED or self.admission.taking:
            return
        if state is State.UNOPENED:
            raise ClientClosedError(
                "the KoalaClient is not open: use `async with KoalaClient(...) as koala:` "
                "(in a web app, in its lifespan) before calling it"
            )
        if state is State.FORKED:
            raise ClientClosedError(
                f"this {self.face} was opened before os.fork(); create a new {self.face} in "
                "the child process (e.g. in your worker's startup hook)"
            )
        if state is State.ORPHANED:
            raise ClientClosedError(ORPHANED)
        raise ClientClosedError(f"the {self.face} is closed; create a new one to send again")

    # The queue

    def offer(self, built: Built | None) -> Waiting | None:
        """Queue what the intake built (None: ``before_send`` dropped it, counted here).

        Returns None, or something the call must await: a yield to the event loop (a loop
        of calls that has not let it run, see :meth:`Runtime.added`), a wait for room in a
        full queue, or :data:`DROPPED`; what it gives is False if the entry was dropped.
        Raises what ``on_full="raise"`` and a closed engine raise.
        """
        if built is None:
            self.ledger.refuse("filtered")
            return None
        if self._running_in._thread_id != _get_ident():
            self._check_loop()  # another thread or event loop (or trio, or Python 3.10)
        ledger = self.ledger
        if ledger.pending >= self.admission.limit:  # full, closed, dead or spooling: rare
            return self._full(built)
        # take(), inline (ledger.accept() and queue.add() each cost every call a frame,
        # ~0.05 µs): the built tuple is the inbox's item as it is.
        ledger.pending += 1
        inbox = self._queue.inbox
        inbox.append(built)
        waiting = len(inbox)
        if waiting % FILE_EVERY and waiting != 1:  # nothing for the filer to hear of
            return None
        runtime = self._runtime
        # The 128th unfiled entry: the loop had no turn since the 64th, so let it run.
        return runtime.loop.checkpoint() if runtime.added(waiting) else None  # type: ignore[union-attr]

    def offer_encoded(self, item: Item) -> Waiting | None:
        """Queue an entry built in another thread: :meth:`offer` without its yield.

        The door :class:`~koala_async.KoalaSyncClient`'s engine thread uses. Returns None,
        or a wait for room that the caller must await (the queue is full).
        """
        if self.ledger.pending >= self.admission.limit:
            return self._full(item)
        self.take(item)
        return None

    def _unfiled(self, error: Exception, item: Item) -> None:
        """The queue could not file an entry (a bug): drop it as ``rejected``, counted,
        logged and handed to ``on_error``, so it still ends in one outcome, reported as any
        drop is, and the background goes on."""
        logger.error("unexpected error filing an entry; dropped", exc_info=error)
        self.ledger.lose("rejected")
        _, raw, who, ip, _ = item
        self.reporter.dropped_entry("rejected", raw, who, ip, error)
        if self._runtime is not None:
            self._runtime.after_settle()

    def delivering(self) -> bool:
        """The engine takes entries into memory and will deliver them: open, or closing
        from open (not dead, not overflowing to its spool), its workers not yet stopped."""
        admission, runtime = self.admission, self._runtime
        state = admission.state
        if state is State.CLOSING:
            state = admission.before_close
        return state is State.OPEN and runtime is not None and not runtime.stopping

    def take(self, item: Item) -> None:
        """Count an entry accepted and queue it, to be filed at the loop's next turn, past
        ``max_queue_size`` if need be. (:meth:`offer` does the same inline: it is the hot
        path.) The sync client's drain calls it for entries whose call was already told they
        were taken, only while :meth:`delivering`."""
        self.ledger.accept()
        inbox = self._queue.inbox
        inbox.append(item)
        waiting = len(inbox)
        if not waiting % FILE_EVERY or waiting == 1:
            self._runtime.added(waiting)  # type: ignore[union-attr]

    def _full(self, item: Item) -> Waiting | None:
        """The queue is full (or the engine takes nothing): drop, raise, or wait for room."""
        kind, raw, who, ip, _ = item
        admission = self.admission
        if admission.state is State.DISABLED:
            return None
        if not admission.taking:
            self.check_open()
        if admission.state is State.DEAD and self._spool is None:
            assert self._circuit.verdict is not None
            self.refuse_entry(_DROPS[self._circuit.verdict], raw, who, ip)
            return DROPPED
        if self._spool is not None:  # memory is full, older entries wait on disk, or it is dead
            runtime = self._runtime
            assert runtime is not None
            runtime.file()  # the inbox's entries are older: they take their places first
            spool = self._spool
            if not spool.park(kind, raw, who, ip):
                self.refuse_entry("spool_full", raw, who, ip)
                return DROPPED
            admission.spool(True)
            if spool.behind:  # the disk is slower than the calls: wait for the writer
                return spool.catch_up()
            self._parked = parked = self._parked + 1
            # The writer takes parked entries at its own pace: a loop that only parks must
            # yield now and then, as a request handler does anyway.
            return None if parked % FILE_EVERY else runtime.loop.checkpoint()
        on_full = self.config.on_full
        if on_full == "raise":
            raise QueueFullError(
                f"{self.ledger.pending} entries are queued, the most max_queue_size allows; "
                "raise max_queue_size, or use on_full='pace' to wait for room"
            )
        if on_full == "block" or (on_full == "pace" and self._circuit.state is CLOSED):
            return self._wait_then_put(item)
        self.refuse_entry("queue_full", raw, who, ip)
        return DROPPED

    async def _wait_then_put(self, item: Item) -> bool:
        """Wait for room: ``block`` until there is some, ``pace`` at most :data:`MAX_BLOCK`
        (then the entry is dropped as ``queue_full``). False: it was dropped."""
        _, raw, who, ip, _ = item
        runtime = self._runtime
        assert runtime is not None
        runtime.flush_waiting()  # send partial batches now: room comes sooner
        admission, size = self.admission, self.config.max_queue_size
        pace = self.config.on_full == "pace"
        # pace waits for any room; block for a tenth of the queue (fewer wake-ups)
        at = size - 1 if pace else size - max(1, size // 10)
        end = time.monotonic() + MAX_BLOCK
        while self.ledger.pending >= admission.limit:
            if admission.state is not State.OPEN:
                if not admission.taking:
                    self.check_open()
                assert self._circuit.verdict is not None
                self.refuse_entry(_DROPS[self._circuit.verdict], raw, who, ip)
                return False
            if pace and self._circuit.state is not CLOSED:
                self.refuse_entry("queue_full", raw, who, ip)  # the endpoint is down: never wait
                return False
            if pace:
                left = end - time.monotonic()
                if left <= 0 or not await runtime.room(at, left):
                    self.refuse_entry("queue_full", raw, who, ip)  # a handler never waits long
                    return False
            else:
                await runtime.room(at)
            if not admission.taking:
                self.check_open()
        self.take(item)
        return True

    def refuse_entry(self, reason: DropReason, raw: bytes, who: Who, ip: str | None) -> None:
        """Drop an entry at the call: counted, logged (rate-limited), given to on_error."""
        self.ledger.refuse(reason)
        if reason == "queue_full":
            why = (
                f"{self.config.shown_url} is not answering"
                if self._circuit.state is not CLOSED
                else f"max_queue_size={self.config.max_queue_size} entries are waiting"
            )
            self.reporter.warn(
                reason,
                f"dropping entries (queue_full): {why}; raise max_queue_size, or use "
                "on_full='block' to wait for room whatever happens",
            )
        self.reporter.dropped_entry(reason, raw, who, ip)

    def refuse_call(self, refusal: Refusal) -> None:
        """Drop a bad call (or one on an engine that is not open): counted, logged (each
        problem once a minute at most) and handed to ``on_error``."""
        self.ledger.refuse(refusal.reason)
        self.reporter.warn(refusal.problem, refusal.message)
        self.reporter.refused(refusal.failure)

    def _circuit_changed(self) -> None:
        """The endpoint went down, came back, or is gone: wake what waits on that."""
        runtime = self._runtime
        assert runtime is not None
        if self._circuit.state is DEAD:
            if self._spool is not None:
                self._spool.paused = True  # later calls wait on disk, for a fixed key or URL
            self.admission.dead()  # every later call is dropped at once, with the reason
            runtime.flush_waiting()  # and what is queued, rather than at the next tick
        runtime.wake_room()


def _is_httpx_client(http_client: object) -> bool:
    """Is it an ``httpx.AsyncClient``? Whoever made one imported httpx: if it is not
    imported, this is not one (and the check does not import it, ~50 ms)."""
    httpx_module = sys.modules.get("httpx")
    return httpx_module is not None and isinstance(http_client, httpx_module.AsyncClient)


_OTHER_LOOP = (
    "this {face} was opened in another event loop (a module-scoped async fixture, another "
    "thread's loop); open it in the event loop that calls it, or use one KoalaSyncClient "
    "from threads"
)
ORPHANED = (
    "this client's event loop has ended (it was opened under another asyncio.run() or "
    "anyio.run()); open the client inside the event loop that uses it, e.g. "
    "`async with KoalaClient(...)` in your main coroutine or your app's lifespan"
)
