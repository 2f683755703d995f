"""The sync client's delivery: one engine per process, on an event loop in a daemon thread.

One delivery engine: the async client's :class:`~._engine.Engine`, running on an asyncio
event loop in a daemon thread of its own, so limiter, circuit, retries and accounting are
the async client's, not a copy. The hot path never waits for that thread: a call goes
through the same :class:`~._intake.Intake` as ``KoalaClient``'s in the caller's thread (same
errors, same drops), appends ``(kind, raw, who, ip)`` to a deque (an atomic append) and
wakes the loop only when nobody has yet, so a burst of calls costs one wake-up. The loop
thread moves the inbox into the engine's queue (:meth:`Engine.take`, or
:meth:`Engine.offer_encoded` when it is not simply delivering). Only a full queue makes
a call hop to the loop, to drop, raise or wait as ``on_full`` says. Drops at the call
(``invalid``, ``closed``, ``filtered``) are counted on the loop thread too, where the
counters are written.

The traps peers fell into, and what this does about each:

- **fork** (gunicorn ``--preload``, uWSGI, Celery prefork): the engine starts on the first
  call, and every call compares the pid: a child starts its own engine, with fresh counters.
- **flush() from the engine's own thread** (an ``on_error`` callback): it cannot wait on
  itself, so it asks for delivery and returns at once instead of deadlocking.
- **the ends of a process**: every started engine is held until its loop ends, whether or
  not its client still exists, and closed, all at once, each within its ``shutdown_timeout``:
  at interpreter exit (atexit, so ``sys.exit`` too), in ``multiprocessing`` children (which
  end with ``os._exit``: a ``multiprocessing.util.Finalize``), and in the background when
  its client is garbage-collected. The thread is a daemon and every wait is bounded, so exit
  never hangs; what a close could not deliver is counted and logged.
- **gevent monkey-patching**: the engine's thread is a real OS thread (``_thread``'s
  original), and no lock is held while waiting, so a lock made before the patch (gunicorn
  ``--preload``) never blocks the hub; what a greenlet waits on is gevent's, which yields.
"""

from __future__ import annotations

import _thread
import atexit
import logging
import math
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ._client import build
from ._engine import preload
from ._exceptions import ClientClosedError, KoalaError
from ._fork import in_child
from ._stats import DROP_REASONS, FlushResult, Stats

if TYPE_CHECKING:
    # asyncio and concurrent.futures (~20 ms to import) wait for the first call: a script or
    # a web worker that imports koala_async, or only makes its client, does not load them.
    import asyncio
    import concurrent.futures

    from ._config import Config
    from ._engine import Engine, Waiting
    from ._loop import Event, Tasks
    from ._queue import Item

__all__ = ["CLOSED", "Engines", "ThreadEngine", "pid"]

logger = logging.getLogger("koala_async")

# This process's id, set again in a forked child (the at-fork hook below): a call compares
# it with its engine's instead of asking the kernel (os.getpid is a system call, 0.19 µs).
pid = os.getpid()
_STATS_TIMEOUT = 1.0  # seconds stats() waits for the loop before reading the counters as is
_START_TIMEOUT = 10.0  # seconds a first call waits for the engine's loop (about a ms)
_BOOKKEEPING = 0.2  # seconds of a close's timeout kept for counting and logging the drops
_POLL = 0.25  # seconds between checks that the engine is alive, while a call waits for room
CLOSED = "the KoalaSyncClient is closed; create a new one to send again"


class ThreadEngine:
    """One process's delivery: an engine opened on an event loop in a daemon thread.

    Held by :data:`_engines` from its start until its loop has ended, whether or not its
    KoalaSyncClient still exists: the exit hooks close every engine, so a client made in a
    function, or garbage-collected while holding entries, still delivers them."""

    def __init__(self, core: Engine) -> None:
        import asyncio
        import concurrent.futures

        self.pid = pid
        self.core = core
        self.ledger = core.ledger
        self.inbox: deque[Item] = deque()
        self.woken = False  # a drain is due: later calls need not wake the loop
        self.wake = asyncio.Event()  # set from any thread (through the loop) to drain
        self.full: deque[tuple[Item, concurrent.futures.Future[bool]]] = deque()
        # Drops at the call, to count on the loop: a burst (threads calling a closing client)
        # costs one wake-up, not one callback each, which would starve the close.
        self.refusals: deque[Callable[[Engine], None]] = deque()
        self.late = threading.Lock()  # held to hand over a refusal, or to stop taking them
        self.accepting = False  # the core is open and takes entries from the inbox
        # Made in the engine's thread (under gevent, its selector belongs to that thread).
        self.loop: asyncio.AbstractEventLoop
        self.made: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.ident: int | None = None  # the engine thread's id
        self.alive = False  # the thread runs (or is about to)
        self.tasks: Tasks | None = None
        self.closed: concurrent.futures.Future[FlushResult] = concurrent.futures.Future()
        self.deadline: float | None = None  # monotonic time by which the close ends
        self._stop: Event | None = None
        self._stop_timeout: float | None = None
        self._stop_asked = False

    def start(self) -> None:
        """Start the thread, without waiting for it: calls meanwhile wait in the inbox.
        Under gevent it is a real OS thread, as every wait in it must be."""
        self.alive = True
        _engines.add(self)
        _close_at_process_end()
        try:
            _start_thread(self._run)
        except BaseException:
            self.alive = False
            _engines.discard(self)
            raise

    def _run(self) -> None:
        import asyncio

        self.ident = _get_ident()
        try:
            self.loop = asyncio.new_event_loop()
        except BaseException as exc:
            self.alive = False
            _engines.discard(self)
            self.made.set_exception(exc)
            raise
        asyncio.set_event_loop(self.loop)
        self.made.set_result(None)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # a daemon thread: say so, never raise
            logger.exception("the koala-async delivery thread failed")
            if not self.closed.done():
                self.closed.set_exception(ClientClosedError(f"the delivery thread failed: {exc}"))
        finally:
            self.alive = False
            self.loop.close()
            _engines.discard(self)

    async def _main(self) -> None:
        from . import _loop

        core = self.core
        loop = _loop.current()
        # Made first, so (with anyio's task groups) the core's own, entered and left by this
        # task in __aenter__ and aclose, nests inside it.
        self.tasks = tasks = await loop.tasks()
        try:
            await core.open()
            self._stop = loop.event()
            self.accepting = True
            tasks.spawn(self._drain_forever)
            if self._stop_asked:  # closed before the loop was up
                self._stop.set()
            self.drain()  # what calls handed over while the loop was starting
            await self._stop.wait()
            self.drain()  # what callers handed over before close() began
            self._refuse_full()
            # The drain goes on while the core delivers what it holds: a call that raced
            # close() still has its entry taken (see drain), until the core stops.
            result = await core.close(self._stop_timeout)
        finally:
            self.accepting = False
            tasks.cancel()  # puts still waiting for room: the core is closed
            await tasks.leave()
        self._refuse_late()
        self._refuse_full()
        with self.late:  # a drop counted from now on is counted by its caller's thread
            self.count_refusals()
            self.closed.set_result(result)

    def _refuse_late(self) -> None:
        """Calls that raced close() past the core's end: counted and logged, never lost."""
        late = len(self.inbox)
        for _ in range(late):
            self.inbox.popleft()
            self.ledger.refuse("shutdown_timeout")
        if late:
            logger.warning(
                "%d %s handed over while the KoalaSyncClient closed, after its delivery "
                "ended: dropped (shutdown_timeout); close the client after the threads that "
                "call it are done",
                late,
                "entry was" if late == 1 else "entries were",
            )

    # On the loop thread, in its tasks

    async def _drain_forever(self) -> None:
        wake = self.wake
        while True:
            await wake.wait()
            wake.clear()
            self.drain()

    def drain(self) -> None:
        """Move the inbox into the core's queue, then the calls that found it full.

        Every entry in the inbox was taken: its call returned its id. So while the core
        delivers (open, or closing and not yet stopped) each is queued even past
        ``max_queue_size`` (by at most the calls that raced the caller's check), rather than
        wait for room a close would cut short."""
        self.woken = False
        self.count_refusals()
        if not self.accepting:
            return
        inbox, core = self.inbox, self.core
        if core.delivering():
            take = core.take
            while inbox:
                take(inbox.popleft())
        else:  # dead endpoint, spool overflow: the core says where each goes
            put = core.offer_encoded
            while inbox:
                item = inbox.popleft()
                try:
                    waiting = put(item)
                except KoalaError:  # on_full="raise", or closed meanwhile
                    core.refuse_entry("queue_full", item[1], item[2], item[3])
                    continue
                if waiting is not None:  # full: its caller has moved on, so wait here
                    self._wait(waiting, None)
        full = self.full
        while full:
            item, done = full.popleft()
            self.put_full(item, done)

    def count_refusals(self) -> None:
        refusals, core = self.refusals, self.core
        while refusals:
            refusals.popleft()(core)

    def put_full(self, item: Item, done: concurrent.futures.Future[bool] | None) -> None:
        """The queue was full: put one entry as ``on_full`` says, telling ``done`` how."""
        try:
            waiting = self.core.offer_encoded(item)
        except KoalaError as exc:
            if done is None:
                raise
            done.set_exception(exc)
            return
        if waiting is not None:
            self._wait(waiting, done)
        elif done is not None:
            done.set_result(True)

    def _refuse_full(self) -> None:
        while self.full:
            self.full.popleft()[1].set_exception(ClientClosedError(CLOSED))

    def _wait(self, waiting: Waiting, done: concurrent.futures.Future[bool] | None) -> None:
        assert self.tasks is not None
        self.tasks.spawn(lambda: self._settle(waiting, done))

    async def _settle(self, waiting: Waiting, done: concurrent.futures.Future[bool] | None) -> None:
        try:
            taken = await waiting
        except BaseException as exc:  # closed while waiting for room, or cancelled at close
            if done is None:
                self.ledger.refuse("shutdown_timeout")  # its caller was told it was taken
            else:
                done.set_exception(
                    exc if isinstance(exc, KoalaError) else ClientClosedError(CLOSED)
                )
            if not isinstance(exc, Exception):
                raise
        else:
            if done is not None:
                done.set_result(taken is not False)

    def snapshot(self) -> Stats:
        """The core's counters plus the inbox, as pending. On the loop thread, or once the
        loop has stopped, this is consistent."""
        stats = self.core.stats()
        handed = len(self.inbox)
        if not handed:
            return stats
        return msgspec.structs.replace(
            stats, accepted=stats.accepted + handed, pending=stats.pending + handed
        )

    def request_stop(self, timeout: float | None) -> None:
        self._stop_timeout = timeout
        self._stop_asked = True
        if self._stop is not None:
            self._stop.set()

    # From any thread

    @property
    def running(self) -> bool:
        return self.alive and not self.closed.done()

    def stop_soon(self, timeout: float) -> bool:
        """Ask the loop to close the core within ``timeout`` seconds (once; later asks keep
        the first deadline). False if the loop has ended."""
        if self.pid != pid:  # a parent's engine, in a forked child
            return False
        if self.deadline is None:
            self.deadline = time.monotonic() + timeout
            # The core gets a little less: counting and logging what it gave up comes after
            # its deadline, and must come before ours (at exit, nothing comes later).
            return self.call(self.request_stop, timeout - min(_BOOKKEEPING, timeout / 10))
        return self.running

    def wait_closed(self, timeout: float) -> FlushResult | None:
        """The close's result, waiting at most ``timeout`` seconds; None if not done."""
        import concurrent.futures

        try:
            return self.closed.result(None if timeout == math.inf else max(timeout, 0.0))
        except (concurrent.futures.TimeoutError, ClientClosedError):
            return None

    def on_loop(self) -> bool:
        return _get_ident() == self.ident

    def call(self, function: Any, *args: Any) -> bool:
        """Run ``function(*args)`` on the loop thread soon; False if the loop is closed."""
        try:
            self.loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the loop closed: the engine is done
            return False
        return True

    def put_waiting(self, item: Item) -> bool:
        """From a caller's thread, the queue being full: let the loop drop, raise or wait
        for room, as ``on_full`` says; False if it dropped the entry."""
        import concurrent.futures

        if self.on_loop():  # e.g. from on_error: waiting here would stop the loop
            self.drain()
            self.put_full(item, None)
            return True
        done: concurrent.futures.Future[bool] = concurrent.futures.Future()
        self.full.append((item, done))  # after this thread's earlier entries: in order
        if not self.call(self.wake.set):
            raise ClientClosedError(CLOSED)
        # The loop answers: at once (drop, raise), within the pace bound, or when room
        # comes (block); the call returns the id only if the entry was taken.
        while True:
            try:
                return done.result(_POLL)
            except concurrent.futures.TimeoutError:
                if not self.running:  # the loop ended without taking it
                    raise ClientClosedError(CLOSED) from None

    def stats(self) -> Stats:
        """:meth:`snapshot`, taken on the loop thread (within a bound) from any other."""
        import concurrent.futures

        if self.on_loop() or not self.running:
            return self.snapshot()
        future: concurrent.futures.Future[Stats] = concurrent.futures.Future()
        if self.call(lambda: future.set_result(self.snapshot())):
            try:
                return future.result(_STATS_TIMEOUT)
            except concurrent.futures.TimeoutError:  # the loop is busy (a slow on_error?)
                pass
        return self.snapshot()


class Engines:
    """A KoalaSyncClient's engine in each process that uses it: started on the first call
    in a process (a forked child starts its own, afresh), stopped by the client's close."""

    def __init__(self, config: Config, core: Engine, key: str | None, options: dict[str, Any]):
        self.config = config
        self.engine: ThreadEngine | None = None  # this process's, once started
        self.closed = False
        self._core: Engine | None = core  # this process's, until its thread starts
        self._spare = core  # counts drops where no engine runs (a forked child, uncounted)
        self._key = key
        self._options = options
        self._final: ThreadEngine | None = None
        self._starting: ThreadEngine | None = None  # made, its loop maybe not yet
        self._lock = _ForkSafeLock()

    def start(self) -> ThreadEngine | None:
        """The engine for this process, started now if need be; None if disabled.

        The lock is never held while waiting (for the engine's loop): under gevent it may be
        a real lock, made before the patch, and a greenlet blocked on it blocks the hub."""
        # What the engine's thread would import as it opens, imported here first: never in a
        # thread of ours that a fork could cut short mid-import. (A disabled client starts
        # no engine, and its every call comes here: it imports nothing.)
        if self.config.enabled:
            preload(spool=self._spare.spool_path is not None)
        with self._lock:
            engine = self.engine
            if engine is not None and engine.pid == pid:
                return engine  # another thread started it meanwhile
            if self.closed:
                raise ClientClosedError(CLOSED)
            if not self.config.enabled:
                return None
            starting = self._starting
            if starting is None or starting.pid != pid:
                core = self._core
                if core is None or engine is not None:  # used in a parent: start afresh
                    core = build(self._key, self._options, "KoalaSyncClient")[2]
                self._core = None
                self._starting = starting = ThreadEngine(core)
                starting.start()
                # Closed (in the background) if the client is collected while its engine
                # runs (this holder is the client's alone); the exit hooks wait for it.
                timeout = self.config.shutdown_timeout
                weakref.finalize(self, starting.stop_soon, timeout).atexit = False
        import concurrent.futures

        try:
            starting.made.result(_START_TIMEOUT)  # its loop, made in its thread: about a ms
        except (concurrent.futures.TimeoutError, OSError) as exc:
            logger.exception("the koala-async delivery thread did not start")
            raise ClientClosedError(f"the delivery thread did not start: {exc!r}") from None
        with self._lock:
            if self.closed:  # closed meanwhile: this engine is the close's to end
                starting.stop_soon(self.config.shutdown_timeout)
                raise ClientClosedError(CLOSED)
            self.engine = starting
        return starting

    def flush(self, timeout: float | None) -> FlushResult:
        """See :meth:`KoalaSyncClient.flush`."""
        if self.closed:
            raise ClientClosedError(CLOSED)
        engine = self.engine
        if engine is None or engine.pid != pid or not engine.running:
            return FlushResult(delivered=0, dropped=0, pending=0)
        if engine.on_loop():
            engine.drain()
            engine.core.flush_waiting()
            return FlushResult(delivered=0, dropped=0, pending=engine.snapshot().pending)
        import asyncio
        import concurrent.futures

        wait = self.config.shutdown_timeout if timeout is None else float(timeout)
        before = self.stats()
        future = asyncio.run_coroutine_threadsafe(_flush(engine, wait), engine.loop)
        try:
            return future.result(None if wait == math.inf else wait)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return _result(before, self.stats())

    def close(self, timeout: float | None) -> FlushResult:
        """See :meth:`KoalaSyncClient.close`."""
        with self._lock:
            engine, self.engine, self.closed = self.engine, None, True
            if engine is not None and engine.pid == pid:
                self._final = engine  # for stats() after the close
        if engine is None or engine.pid != pid or not engine.running:
            return FlushResult(delivered=0, dropped=0, pending=0)
        wait = self.config.shutdown_timeout if timeout is None else float(timeout)
        before = engine.snapshot() if engine.on_loop() else engine.stats()
        if not engine.stop_soon(wait) or engine.on_loop():
            return _result(before, engine.snapshot())  # on_error closed us: cannot wait
        result = engine.wait_closed(wait)
        # Not done in time: what is pending is still the engine's, which goes on closing in
        # the background (the exit hooks wait for it, or count and log what it loses).
        return _result(before, engine.snapshot()) if result is None else result

    @property
    def spool_path(self) -> str | None:
        """See :attr:`KoalaSyncClient.spool_path`."""
        engine = self.engine or self._final
        return (self._spare if engine is None else engine.core).spool_path

    def stats(self) -> Stats:
        """See :meth:`KoalaSyncClient.stats`."""
        engine = self.engine or self._final
        if engine is None or engine.pid != pid:
            core = self._core
            return _EMPTY if core is None else core.stats()
        return engine.stats()

    def count(self, refuse: Callable[[Engine], None]) -> None:
        """Run ``refuse`` on this process's engine where its counters are written: on the
        delivery thread (they are not locked), or here if that thread has stopped."""
        engine = self.engine or self._final
        if engine is None or engine.pid != pid:
            engine = None if self.closed else self.start()
        if engine is None:  # disabled, or closed before a call here: no thread to go to
            with self._lock:
                refuse(self._core or self._spare)  # the spare: a forked child's, uncounted
        elif engine.on_loop():
            refuse(engine.core)
        else:
            with engine.late:  # the loop's last count and its end are one step under it
                if engine.closed.done():  # the delivery thread writes no counter any more
                    refuse(engine.core)
                    return
                engine.refusals.append(refuse)
            if not engine.woken:
                engine.woken = True
                engine.call(engine.wake.set)  # False: the loop ended, after counting it


_EMPTY = Stats(  # a forked child before its first call: nothing accepted here yet
    accepted=0,
    delivered=0,
    dropped=dict.fromkeys(DROP_REASONS, 0),
    pending=0,
    requests=0,
    retries=0,
    last_error=None,
)


async def _flush(engine: ThreadEngine, timeout: float) -> FlushResult:
    engine.drain()
    return await engine.core.flush(timeout)


def _result(before: Stats, after: Stats) -> FlushResult:
    return FlushResult(
        delivered=after.delivered - before.delivered,
        dropped=after.dropped_total - before.dropped_total,
        pending=after.pending,
    )


# gevent: after monkey.patch_all(), threading's threads are greenlets and its get_ident a
# greenlet's. The engine's thread must be a real one (its waits would otherwise block the
# hub, and its work wait for the app to yield), so it is started with _thread's original.


def _gevent_monkey() -> Any:
    monkey = sys.modules.get("gevent.monkey")
    return monkey if monkey is not None and monkey.is_module_patched("threading") else None


def _original(name: str) -> Any:
    monkey = _gevent_monkey()
    return getattr(_thread, name) if monkey is None else monkey.get_original("_thread", name)


_get_ident: Callable[[], int] = _original("get_ident")  # taken now: before any later patch


def _start_thread(run: Callable[[], None]) -> None:
    if _gevent_monkey() is None:
        threading.Thread(target=run, name="koala-async", daemon=True).start()
    else:
        _original("start_new_thread")(run, ())


# The ends of a process. Every engine of this process is closed, all at once, each within
# its shutdown_timeout: at interpreter exit (atexit), and in multiprocessing's children,
# which end with os._exit once their finalizers ran (multiprocessing.util.Finalize).

_engines: set[ThreadEngine] = set()  # started and not yet ended, whether or not their client lives
_EXIT_GRACE = 1.0  # seconds past an engine's deadline its close may take (on_error's grace)
_finalized_in: int | None = None  # the process whose multiprocessing finalizer is registered


def _close_all() -> None:
    engines = [engine for engine in list(_engines) if engine.pid == pid]
    for engine in engines:
        engine.stop_soon(engine.core.config.shutdown_timeout)
    for engine in engines:
        left = math.inf if engine.deadline is None else engine.deadline - time.monotonic()
        if engine.wait_closed(left + _EXIT_GRACE) is None and engine.running:
            pending = engine.snapshot().pending
            logger.error(
                "the process ended while the KoalaSyncClient was still delivering: %d %s lost; "
                "raise shutdown_timeout, or close() the client before exit",
                pending,
                "entry was" if pending == 1 else "entries were",
            )


atexit.register(_close_all)


def _close_at_process_end() -> None:
    """In a multiprocessing child (fork or spawn; Process and Pool workers), close every
    engine before the child's os._exit, which skips atexit."""
    global _finalized_in
    util = sys.modules.get("multiprocessing.util")
    if util is None or _finalized_in == pid:
        return
    _finalized_in = pid
    util.Finalize(None, _close_all, exitpriority=100)


class _ForkSafeLock:
    """A lock made anew in a forked child, where a thread of the parent may have held it."""

    __slots__ = ("__weakref__", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        _locks.add(self)

    def __enter__(self) -> None:
        self.lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.lock.release()


_locks: weakref.WeakSet[_ForkSafeLock] = weakref.WeakSet()


@in_child
def _after_fork_in_child() -> None:
    global pid
    pid = os.getpid()
    for guard in list(_locks):
        guard.lock = threading.Lock()
