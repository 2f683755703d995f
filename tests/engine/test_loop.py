"""The core's primitives (koala_async._loop): asyncio's own on asyncio (3.11+), anyio's
elsewhere, with the same meaning; and a client that opens, delivers and closes on asyncio
without importing anyio's asyncio backend (15 ms, the first open's whole cost)."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time

import anyio
import pytest
from test_transport import raw_server

from koala_async import KoalaClient, _loop

pytestmark = [pytest.mark.anyio, pytest.mark.every_loop]

native = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="anyio's primitives serve asyncio on Python 3.10"
)


async def test_current_is_asyncio_s_own_on_asyncio_and_anyio_s_elsewhere(
    anyio_backend: object,
) -> None:
    loop = _loop.current()
    if anyio_backend != "trio" and sys.version_info >= (3, 11):
        assert loop is not _loop.ANYIO
        assert loop.token() is asyncio.get_running_loop()
    else:
        assert loop is _loop.ANYIO


async def test_a_deadline_ends_its_block_quietly_or_as_timeout_error() -> None:
    loop = _loop.current()
    with loop.move_on_after(0.01) as scope:
        await loop.sleep(5)
    assert scope.cancelled_caught  # type: ignore[attr-defined]
    with loop.move_on_after(5) as scope:
        await loop.sleep(0)
    assert not scope.cancelled_caught  # type: ignore[attr-defined]
    with pytest.raises(TimeoutError), loop.fail_after(0.01):
        await loop.sleep(5)
    event = loop.event()
    assert not await loop.wait(event, 0.01)
    event.set()
    assert await loop.wait(event, 0.01)
    await loop.sleep(0.02)  # no cancellation is left over for a later await


async def test_deadlines_of_one_length_each_end_their_own_block() -> None:
    """A sender's per-request deadlines (one timer for all on asyncio): a block ends as
    TimeoutError at its own deadline, whatever blocks began or ended before it, and a block
    that ended in time is never cancelled later."""
    loop = _loop.current()
    deadline = loop.deadlines(0.05)
    outcomes: dict[str, str] = {}

    async def block(name: str, start: float, work: float) -> None:
        await loop.sleep(start)
        try:
            with deadline():
                await loop.sleep(work)
            outcomes[name] = "done"
        except TimeoutError:
            outcomes[name] = "timeout"
        await loop.sleep(0.1)  # no cancellation is left over for a later await
        outcomes[name] += ", then fine"

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(block, "quick, first", 0, 0)  # ends long before the timer fires
        tasks.start_soon(block, "slow, second", 0.01, 5)  # due after the first is gone
        tasks.start_soon(block, "quick, third", 0.02, 0.01)
        tasks.start_soon(block, "slow, fourth", 0.03, 5)  # due after the second's timer
    assert outcomes == {
        "quick, first": "done, then fine",
        "slow, second": "timeout, then fine",
        "quick, third": "done, then fine",
        "slow, fourth": "timeout, then fine",
    }
    with deadline():  # used again after all ended: the timer is set anew
        await loop.sleep(0)
    with pytest.raises(TimeoutError), deadline():
        await loop.sleep(5)


@native
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_cancellation_from_outside_is_not_taken_for_a_shared_deadline(
    anyio_backend: str,
) -> None:
    loop = _loop.current()
    deadline = loop.deadlines(5)
    reached = False

    async def owner() -> None:
        nonlocal reached
        try:
            with deadline():
                await loop.sleep(5)
        except TimeoutError:
            reached = True

    task = asyncio.get_running_loop().create_task(owner())
    await asyncio.sleep(0)  # the owner enters its block
    task.cancel()
    await asyncio.wait((task,))
    assert task.cancelled()
    assert not reached


@native
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_cancellation_from_outside_is_not_taken_for_the_deadline(
    anyio_backend: str,
) -> None:
    """The owner's task.cancel() within a deadline's block reaches the owner, even when
    the deadline passes in the same turn of the loop."""
    loop = _loop.current()
    for same_turn in (False, True):
        reached = False

        async def owner() -> None:
            nonlocal reached
            with loop.move_on_after(0.05):
                await loop.sleep(5)
            reached = True  # only if the block ended quietly

        task = asyncio.get_running_loop().create_task(owner())
        await asyncio.sleep(0)  # the owner enters its block
        if same_turn:
            # Due just after the deadline; the loop held past both: one turn runs both.
            asyncio.get_running_loop().call_later(0.06, task.cancel)
            time.sleep(0.1)  # noqa: ASYNC251 (holding the loop is the point)
        else:
            task.cancel()
        await asyncio.wait((task,))
        assert task.cancelled()
        assert not reached


async def test_checkpoint_hands_an_anyio_cancellation_back_to_the_next_await() -> None:
    """An anyio scope cancelled while a call yields: the call returns (its entry is queued),
    the next await takes the cancellation, and the scope swallows it as its own."""
    loop = _loop.current()
    returned = after = False
    with anyio.CancelScope() as scope:
        scope.cancel()
        await loop.checkpoint()
        returned = True
        await anyio.sleep(5)
        after = True
    assert returned
    assert not after
    assert scope.cancelled_caught


@native
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_checkpoint_hands_a_task_cancel_back_to_the_next_await(anyio_backend: str) -> None:
    loop = _loop.current()
    steps: list[str] = []

    async def caller() -> None:
        await loop.checkpoint()
        steps.append("returned")
        await asyncio.sleep(5)
        steps.append("not cancelled")

    task = asyncio.get_running_loop().create_task(caller())
    await asyncio.sleep(0)  # the caller is at its checkpoint
    task.cancel()
    await asyncio.wait((task,), timeout=2)
    assert steps == ["returned"]
    assert task.cancelled()


async def test_a_shielded_wait_outlives_its_owner_s_cancellation() -> None:
    loop = _loop.current()
    steps: list[str] = []

    async def wait() -> None:
        await loop.sleep(0.2)
        steps.append("waited")

    async def owner() -> None:
        await loop.shielded(wait, 5)
        steps.append("returned")
        await anyio.sleep(5)  # the cancellation is taken here, if not raised before
        steps.append("not cancelled")

    async with anyio.create_task_group() as group:
        group.start_soon(owner)
        await anyio.sleep(0.05)
        group.cancel_scope.cancel()
    assert steps[0] == "waited"
    assert "not cancelled" not in steps


async def test_a_shielded_wait_ends_at_its_deadline() -> None:
    loop = _loop.current()
    finished: list[int] = []

    async def wait() -> None:
        await loop.sleep(5)
        finished.append(1)

    assert await loop.shielded(wait, 0.05) is None
    assert not finished


async def test_background_tasks_outlive_their_owner_s_cancellation() -> None:
    loop = _loop.current()
    ran = loop.event()
    tasks = await loop.tasks()

    async def work() -> None:
        await loop.sleep(0.05)
        ran.set()

    with anyio.CancelScope() as scope:
        tasks.spawn(work)
        scope.cancel()
        await anyio.sleep(1)
    assert await loop.wait(ran, 2)
    cancel = tasks.spawn(lambda: loop.sleep(5))
    cancel()
    finished: list[int] = []

    async def sleeper() -> None:
        await loop.sleep(5)
        finished.append(1)

    tasks.spawn(sleeper)
    tasks.spawn(sleeper)
    tasks.cancel()
    await tasks.leave()  # waits for what was cancelled
    assert not finished


async def test_a_task_cancelled_before_it_starts_still_runs_its_finally() -> None:
    """The runtime counts its workers out in a finally: a worker spawned and cancelled in
    one turn of the loop (a stop right after a dispatch) must still count itself out, or
    the close waits forever. On asyncio, a task cancelled before its first step skipped its
    body, finally included."""
    loop = _loop.current()
    tasks = await loop.tasks()
    ended: list[str] = []

    async def work(name: str) -> None:
        try:
            await loop.sleep(5)
        finally:
            ended.append(name)

    cancel = tasks.spawn(lambda: work("alone"))
    cancel()
    tasks.spawn(lambda: work("with the rest"))
    tasks.cancel()
    await tasks.leave()
    assert sorted(ended) == ["alone", "with the rest"]


async def test_leaving_raises_what_a_background_task_raised() -> None:
    loop = _loop.current()
    tasks = await loop.tasks()

    async def fail() -> None:
        raise RuntimeError("a bug")

    tasks.spawn(fail)
    with pytest.raises(Exception, match=r"a bug|TaskGroup|nursery") as caught:
        await tasks.leave()
    assert "a bug" in repr(caught.value) + repr(getattr(caught.value, "exceptions", ""))


@native
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_clients_open_deliver_and_close_without_anyio_s_asyncio_backend(
    anyio_backend: str,
) -> None:
    """In a bare interpreter, as a serverless function or a WSGI worker starts: anyio's
    asyncio backend (15-30 ms to import) is never loaded, by the open, the calls, the requests
    or the close, of a KoalaClient or of a KoalaSyncClient (whose first call waits for its
    engine to start)."""
    async with raw_server(lambda n: b"HTTP/1.1 204 No Content\r\n\r\n") as (port, _):
        code = textwrap.dedent(
            f"""
            import asyncio, sys
            import koala_async

            async def main():
                async with koala_async.KoalaClient(
                    "pk_test", base_url="http://127.0.0.1:{port}"
                ) as koala:
                    await koala.track("Signed Up", email="ada@example.com")
                    result = await koala.flush()
                assert result.delivered == 1, result

            asyncio.run(main())
            sync = koala_async.KoalaSyncClient("pk_test", base_url="http://127.0.0.1:{port}")
            sync.track("Signed Up", email="ada@example.com")  # its engine thread starts
            assert sync.flush().delivered == 1
            sync.close()
            print("anyio._backends._asyncio" in sys.modules)
            """
        )
        with anyio.fail_after(60):
            out = await anyio.run_process([sys.executable, "-c", code], check=False)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == "False"


async def _deliver(calls: int, people: int) -> tuple[int, int]:
    """Make ``calls`` track calls over ``people`` e-mails to a server on 127.0.0.1 that
    answers 204, flush and close; return what the client delivered and the requests
    answered."""
    answered: list[int] = []

    def answer(n: int) -> bytes:
        answered.append(n)
        return b"HTTP/1.1 204 No Content\r\n\r\n"

    async with (
        raw_server(answer) as (port, _),
        KoalaClient("pk_test", base_url=f"http://127.0.0.1:{port}") as koala,
    ):
        for i in range(calls):
            await koala.track("Signed Up", email=f"user{i % people}@example.com")
        result = await koala.flush()
    return result.delivered, len(answered)


async def test_a_client_delivers_on_every_loop(anyio_backend: object) -> None:
    """asyncio's loop, trio, and uvloop (FastAPI's under uvicorn[standard]), whose
    create_connection takes fewer arguments than asyncio's."""
    assert await _deliver(5, 5) == (5, 5)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks came in Python 3.12")
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_client_delivers_with_an_eager_task_factory(anyio_backend: str) -> None:
    """asyncio.eager_task_factory (3.12+), which apps set for speed: every task of the
    client starts at once, and CPython's IPv6/IPv4 race must not be used (it fails with
    eager tasks before gh-124309's fix)."""
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
    try:
        delivered, _ = await _deliver(100, 7)
    finally:
        loop.set_task_factory(None)
    assert delivered == 100
