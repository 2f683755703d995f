"""What the core awaits (events, deadlines, sleeps, background tasks, shielded waits) in
asyncio's own terms on asyncio, in anyio's elsewhere (trio; asyncio on Python 3.10).

Why: the first anyio primitive a process uses imports anyio's asyncio backend, 15-30 ms on
the machine of the benchmarks: it was the whole first open of a client, and every
serverless cold start paid it. asyncio has what the core needs: its events and sleeps;
tasks, which outlive a cancelled owner without a shield; deadlines, written here as
``asyncio.timeout`` is but as a plain ``with`` (measured with a turn of the loop inside: 11
µs a deadline, anyio's 24). Python 3.10 has no ``Task.uncancel`` to tell a deadline's
cancellation from the owner's: there anyio stays.

:func:`current` picks one for the running loop; the client asks once, at open.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.lowlevel
import sniffio

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ["ANYIO", "Event", "Flag", "Loop", "Scope", "Tasks", "current"]


class Event(Protocol):
    def set(self) -> None: ...
    def is_set(self) -> bool: ...
    async def wait(self) -> object: ...


class Flag(Protocol):
    """A one-shot event for one waiter (an idle worker's wake-up)."""

    def set(self) -> None: ...
    def wait(self) -> Awaitable[object]: ...


class Scope(Protocol):
    """A deadline over a ``with`` block: the block is cancelled when it passes."""

    @property
    def cancelled_caught(self) -> bool: ...
    def __enter__(self) -> object: ...
    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None: ...


class Tasks(Protocol):
    """Background tasks that a cancellation of their owner does not reach."""

    def spawn(self, run: Callable[[], Awaitable[object]]) -> Callable[[], object]:
        """Start ``run()``; return what cancels it."""
        ...

    def cancel(self) -> None:
        """Cancel every task still running."""
        ...

    async def leave(self) -> None:
        """Wait for every task (all ended or cancelled by now); raise what one raised."""
        ...


class Loop:
    """anyio's primitives: for trio, and for asyncio on Python 3.10."""

    def event(self) -> Event:
        return anyio.Event()

    def flag(self) -> Flag:
        return anyio.Event()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    async def checkpoint(self) -> None:
        """Let the loop run, without taking a cancellation (the caller's entry is queued
        by now: a cancellation here would tell it otherwise)."""
        await anyio.lowlevel.cancel_shielded_checkpoint()

    def move_on_after(self, seconds: float) -> Scope:
        return anyio.move_on_after(seconds)

    def fail_after(self, seconds: float) -> AbstractContextManager[object]:
        """A deadline that raises ``TimeoutError`` when it passes."""
        return anyio.fail_after(seconds)

    def deadlines(self, seconds: float) -> Callable[[], AbstractContextManager[object]]:
        """Makes :meth:`fail_after` blocks of ``seconds`` each, as a sender needs one per
        request (on asyncio, many share one timer)."""
        return lambda: self.fail_after(seconds)

    async def wait(self, event: Event, timeout: float) -> bool:
        """Wait until ``event`` is set (True) or ``timeout`` seconds passed (False)."""
        with self.move_on_after(timeout):
            await event.wait()
        return event.is_set()

    def token(self) -> object:
        """What tells this event loop from another."""
        return anyio.lowlevel.current_token()

    async def tasks(self) -> Tasks:
        """A place for background tasks, entered in the caller's task."""
        group = anyio.create_task_group()
        await group.__aenter__()
        return _GroupTasks(group)

    async def shielded(
        self, wait: Callable[[], Awaitable[object]], timeout: float
    ) -> BaseException | None:
        """Run ``wait()`` for at most ``timeout`` seconds, shielded from cancellation; return
        the cancellation that came meanwhile, for the caller to raise once it is done.

        On asyncio a second ``task.cancel()`` goes through anyio's shield: it is caught here
        and the wait goes on until done or the deadline."""
        deadline = time.monotonic() + timeout
        cancelled: BaseException | None = None
        while True:
            left = deadline - time.monotonic()
            try:
                with anyio.CancelScope(shield=True), anyio.move_on_after(max(left, 0)):
                    await wait()
                break
            except anyio.get_cancelled_exc_class() as exc:
                cancelled = exc
                if time.monotonic() >= deadline:
                    break
        return cancelled


class _GroupTasks:
    """anyio's task group, each task in a shielded scope made before it starts (so a stop
    that comes first can still cancel it)."""

    def __init__(self, group: TaskGroup) -> None:
        self._group = group
        self._scopes: set[anyio.CancelScope] = set()

    def spawn(self, run: Callable[[], Awaitable[object]]) -> Callable[[], object]:
        scope = anyio.CancelScope(shield=True)
        scopes = self._scopes
        scopes.add(scope)

        async def scoped() -> None:
            try:
                with scope:
                    await run()
            finally:
                scopes.discard(scope)

        self._group.start_soon(scoped)
        return scope.cancel

    def cancel(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()

    async def leave(self) -> None:
        # Outside any shield: a task group's scope must be exited after those opened in it.
        await self._group.__aexit__(None, None, None)


class _Asyncio(Loop):
    """asyncio's own primitives (Python 3.11+)."""

    def event(self) -> Event:
        return asyncio.Event()

    def flag(self) -> Flag:
        return _Flag()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def checkpoint(self) -> None:
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError as exc:
            # Hand the cancellation back, for the task's next await to take, with its message
            # (by which anyio's scopes know their own).
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
            task.cancel(exc.args[0] if exc.args else None)

    def move_on_after(self, seconds: float) -> Scope:
        return _Deadline(seconds, False)

    def fail_after(self, seconds: float) -> AbstractContextManager[object]:
        return _Deadline(seconds, True)

    def deadlines(self, seconds: float) -> Callable[[], AbstractContextManager[object]]:
        return _Deadlines(seconds)

    async def wait(self, event: Event, timeout: float) -> bool:
        # asyncio's wait on a set event does not yield: neither need its deadline's timer.
        return event.is_set() or await super().wait(event, timeout)

    def token(self) -> object:
        return asyncio.get_running_loop()

    async def tasks(self) -> Tasks:
        return _TaskSet()

    async def shielded(
        self, wait: Callable[[], Awaitable[object]], timeout: float
    ) -> BaseException | None:
        async def bounded() -> None:
            with _Deadline(timeout, False):
                await wait()

        # In a task of its own, which the owner's cancellation does not reach.
        task = asyncio.get_running_loop().create_task(bounded())
        cancelled: BaseException | None = None
        while not task.done():
            try:
                await asyncio.wait((task,))
            except asyncio.CancelledError as exc:
                cancelled = exc
        task.result()  # a bug in wait() is raised, not lost
        return cancelled


class _TaskSet:
    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[object], Callable[[], None]] = {}  # running: cancel
        self._failed: list[BaseException] = []

    def spawn(self, run: Callable[[], Awaitable[object]]) -> Callable[[], object]:
        started = False

        async def main() -> object:
            nonlocal started
            started = True
            return await run()

        loop = asyncio.get_running_loop()
        task = loop.create_task(main())
        task.add_done_callback(self._done)

        def cancel() -> None:
            # A task cancelled before its first step never runs its body, its finally
            # clauses included (a stop would wait forever for one to count itself out): let
            # it start, and cancel it at its first await.
            if started:
                task.cancel()
            else:
                loop.call_soon(task.cancel)

        self._tasks[task] = cancel
        return cancel

    def _done(self, task: asyncio.Task[object]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._failed.append(error)  # raised by leave()

    def cancel(self) -> None:
        for cancel in list(self._tasks.values()):
            cancel()

    async def leave(self) -> None:
        while self._tasks:
            await asyncio.wait(set(self._tasks))
        if self._failed:
            raise self._failed[0]


class _Flag:
    """A future for one waiter, for the wake-up an idle worker waits for: less work than
    an asyncio.Event (no deque of waiters, no coroutine to wait in)."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future = asyncio.get_running_loop().create_future()

    def set(self) -> None:
        if not self._future.done():  # cancelled with its waiter, or set already
            self._future.set_result(None)

    def wait(self) -> asyncio.Future[None]:
        return self._future


class _Deadline:
    """``asyncio.timeout`` as a plain ``with``: at the deadline the task is cancelled, and
    that cancellation (not another one, which ``Task.uncancel`` tells apart) ends the block:
    quietly (``cancelled_caught``), or as ``TimeoutError`` when ``fail``."""

    __slots__ = (
        "_cancelling",
        "_fail",
        "_fired",
        "_handle",
        "_seconds",
        "_task",
        "cancelled_caught",
    )

    def __init__(self, seconds: float, fail: bool) -> None:
        self._seconds = seconds
        self._fail = fail
        self._fired = False
        self._handle: asyncio.TimerHandle | None = None
        self.cancelled_caught = False

    def __enter__(self) -> _Deadline:
        if self._seconds < math.inf:
            task = asyncio.current_task()
            assert task is not None
            self._task = task
            self._cancelling = task.cancelling()
            self._handle = asyncio.get_running_loop().call_later(self._seconds, self.fire)
        return self

    def fire(self) -> None:
        self._fired = True
        self._task.cancel()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if self._handle is not None:
            self._handle.cancel()
        return self._fired and self._ended_by_us(kind, exc)

    def _ended_by_us(self, kind: type[BaseException] | None, exc: BaseException | None) -> bool:
        """After firing: ours if no other cancellation came meanwhile, and it is the one
        ending the block."""
        if self._task.uncancel() <= self._cancelling and kind is asyncio.CancelledError:
            self.cancelled_caught = True
            if self._fail:
                raise TimeoutError from exc
            return True
        return False


class _Deadlines:
    """Deadlines of one length, for many blocks, on one timer at a time: a block's deadline
    is its start plus the length, so they come due in the order the blocks began. The timer
    is set for the oldest block still running; when it fires, every block past its deadline
    is cancelled (as :class:`_Deadline` does) and the timer set for the next. A request's
    deadline costs a deque append rather than a timer set and cancelled: half the CPU.
    Bound: blocks that ended behind one still running stay in the deque until it ends, at
    most one deadline's worth of requests (a few MB at thousands of requests a second)."""

    __slots__ = ("_blocks", "_handle", "_seconds", "loop")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._blocks: deque[_Block] = deque()  # oldest first; ended ones dropped lazily
        self._handle: asyncio.TimerHandle | None = None
        # Made in the loop whose tasks it serves, which is asked once: on 3.11, asking for
        # the running loop is a getpid() system call each time.
        self.loop = asyncio.get_running_loop()

    def __call__(self) -> _Block:
        return _Block(self)

    def start(self, block: _Block) -> None:
        loop = self.loop
        block.at = loop.time() + self._seconds
        self._blocks.append(block)
        if self._handle is None:
            self._handle = loop.call_at(block.at, self._due)

    def end(self) -> None:
        """Drop the ended blocks at the front."""
        blocks = self._blocks
        while blocks and blocks[0].ended:
            blocks.popleft()

    def _due(self) -> None:
        self._handle = None
        self.end()
        blocks = self._blocks
        if not blocks:
            return
        loop = self.loop
        now = loop.time() + 0.001  # asyncio may run a timer a clock tick early: no re-arming
        while blocks and blocks[0].at <= now:
            blocks.popleft().fire()  # running: end() dropped those that ended
            self.end()
        if blocks:
            self._handle = loop.call_at(blocks[0].at, self._due)


class _Block(_Deadline):
    """One block under :class:`_Deadlines`: raises ``TimeoutError`` at its deadline."""

    __slots__ = ("_owner", "at", "ended")

    def __init__(self, owner: _Deadlines) -> None:
        self._owner = owner
        self._fail = True
        self._fired = self.ended = self.cancelled_caught = False
        self.at = math.inf

    def __enter__(self) -> _Block:
        task = asyncio.current_task(self._owner.loop)
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self._owner.start(self)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self.ended = True
        self._owner.end()
        return self._fired and self._ended_by_us(kind, exc)


ANYIO = Loop()
_ASYNCIO: Loop = _Asyncio() if sys.version_info >= (3, 11) else ANYIO


def current() -> Loop:
    """The primitives for the running event loop."""
    return _ASYNCIO if sniffio.current_async_library() == "asyncio" else ANYIO
