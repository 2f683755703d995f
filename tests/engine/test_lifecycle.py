"""The client's lifecycle under cancellation, a second event loop and a cut-short close
(issue 11): against a real server on 127.0.0.1 that each test starts and stops."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from wire_check import invariant

from koala_async import ClientClosedError, DeliveryFailure, KoalaClient
from koala_async.testing import FakeCollector, Reply

pytestmark = pytest.mark.anyio
PEOPLE = 300


@pytest.fixture
async def slow() -> AsyncIterator[tuple[FakeCollector, str]]:
    """A collector that answers 50 ms late: the owner is cancelled with work in flight."""
    fake = FakeCollector()
    fake.responder = lambda received: Reply(status=200, delay=0.05)
    async with fake.serve(host="127.0.0.1", port=0) as base_url:
        yield fake, base_url


async def _fill(koala: KoalaClient) -> None:
    for i in range(PEOPLE):
        await koala.track("Step", email=f"p{i}@acme.com")
    await anyio.sleep(0.02)  # some in flight, most still queued


async def _after_close(fake: FakeCollector, koala: KoalaClient) -> None:
    stats = koala.stats()
    invariant(stats)
    assert (stats.delivered, stats.pending) == (PEOPLE, 0), stats
    assert koala._engine.state.value == "closed"
    seen = len(fake.requests)
    await anyio.sleep(0.3)
    assert len(fake.requests) == seen, "nothing is sent once closed"


async def test_a_cancel_scope_around_the_owner_still_flushes(
    slow: tuple[FakeCollector, str],
) -> None:
    fake, base_url = slow
    with anyio.move_on_after(0.5):
        async with KoalaClient("pk_test", base_url=base_url) as koala:
            await _fill(koala)
            await anyio.sleep(30)
    await _after_close(fake, koala)


async def test_a_failing_sibling_in_a_task_group_still_flushes(
    slow: tuple[FakeCollector, str],
) -> None:
    fake, base_url = slow

    async def fail() -> None:
        await anyio.sleep(0.1)
        raise RuntimeError("a sibling failed")

    koala = KoalaClient("pk_test", base_url=base_url)

    async def owner() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(fail)
            async with koala:
                await _fill(koala)
                await anyio.sleep(30)

    with pytest.raises(Exception, match=r"TaskGroup|Trio nursery"):  # an ExceptionGroup
        await owner()
    await _after_close(fake, koala)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_task_cancel_twice_on_the_owner_still_flushes(
    slow: tuple[FakeCollector, str],
) -> None:
    """asyncio's task.cancel() goes through anyio's shield the second time: the flush must
    go on anyway, and the cancellation reach the owner after it."""
    fake, base_url = slow
    koala = KoalaClient("pk_test", base_url=base_url)

    async def owner() -> None:
        async with koala:
            await _fill(koala)
            await anyio.sleep(30)

    task = asyncio.ensure_future(owner())
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.sleep(0.05)
    task.cancel()  # while the final flush runs
    with pytest.raises(asyncio.CancelledError):
        await task
    await _after_close(fake, koala)


@pytest.mark.parametrize("run", range(30))
async def test_closing_at_once_right_after_entering_never_hangs(run: int) -> None:
    """On trio this hung in 14 of 30 runs: the senders' shields were registered only once
    they ran."""
    koala = KoalaClient("pk_test", base_url="http://127.0.0.1:9")
    with anyio.fail_after(5):
        async with koala:
            await koala.track("Step", email="a@acme.com")
            await koala.aclose(timeout=0)
    stats = koala.stats()
    invariant(stats)
    assert stats.dropped["shutdown_timeout"] == 1


async def test_a_413_split_cut_short_by_the_deadline_counts_each_entry_once() -> None:
    """A split cut short by the deadline left pending negative, and told on_error that all 30
    entries were lost when some had been delivered."""
    failures: list[DeliveryFailure] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.05)
        return httpx.Response(413 if len(request.content) > 700 else 200)

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    async with KoalaClient(
        "pk_test", http_client=http, on_error=failures.append, shutdown_timeout=0.3
    ) as koala:
        for i in range(30):
            await koala.track("Step", email="a@acme.com", properties={"i": i})
    stats = koala.stats()
    invariant(stats)
    assert stats.pending == 0
    assert 0 < stats.delivered < 30, "the deadline cut the split short"
    assert stats.dropped["shutdown_timeout"] == 30 - stats.delivered
    assert sum(len(f.entries) for f in failures) == stats.dropped_total


def test_a_second_event_loop_is_refused_with_what_to_do() -> None:
    """asyncio.run twice, a common mistake from sync code: calls went into a client whose
    senders were dead, and aclose() failed with a RuntimeError about cancel scopes."""
    koala = KoalaClient("pk_test", base_url="http://127.0.0.1:9", shutdown_timeout=0)
    strict = KoalaClient("pk_test", base_url="http://127.0.0.1:9", strict=True)

    async def open_both() -> None:  # and leave them open: this event loop then ends
        await koala.__aenter__()
        await strict.__aenter__()

    asyncio.run(open_both())
    assert asyncio.run(koala.track("Step", email="a@acme.com")) is None  # counted, not raised
    assert koala.stats().dropped["closed"] == 1
    with pytest.raises(ClientClosedError, match="event loop has ended"):
        asyncio.run(strict.track("Step", email="a@acme.com"))
    asyncio.run(koala.aclose())  # harmless now, and it ends closed
    assert koala._engine.state.value == "closed"
    invariant(koala.stats())


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="on 3.10 the client runs on anyio's task group, which must be left in the task that "
    "entered it: these tests open and close the client in two tasks",
)
def test_an_idle_event_loop_s_client_is_refused_in_the_next_loop_of_its_thread() -> None:
    """pytest-asyncio's module-scoped fixture: its loop opens the client and waits, not
    running, while a test's loop runs in the same thread and calls the client."""
    fixture_loop = asyncio.new_event_loop()
    koala = KoalaClient("pk_test", base_url="http://127.0.0.1:9", shutdown_timeout=0)
    try:
        fixture_loop.run_until_complete(koala.__aenter__())
        assert asyncio.run(koala.track("Step", email="a@acme.com")) is None
        assert koala.stats().dropped["closed"] == 1
        assert fixture_loop.run_until_complete(koala.track("Step", email="a@acme.com"))
        fixture_loop.run_until_complete(koala.aclose(0))
    finally:
        fixture_loop.close()
    invariant(koala.stats())


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="on 3.10 the client runs on anyio's task group, which must be left in the task that "
    "entered it: these tests open and close the client in two tasks",
)
def test_a_live_event_loop_other_than_its_own_is_refused_with_what_to_do() -> None:
    """A module-scoped async fixture opens the client in one loop, a test calls it from
    another, which is alive: calls returned ids and nothing was sent until teardown."""
    loop = asyncio.new_event_loop()
    koala = KoalaClient("pk_test", base_url="http://127.0.0.1:9", shutdown_timeout=0)
    strict = KoalaClient("pk_test", base_url="http://127.0.0.1:9", strict=True)

    async def open_both() -> None:
        await koala.__aenter__()
        await strict.__aenter__()

    owner = threading.Thread(target=loop.run_forever)
    owner.start()
    try:
        asyncio.run_coroutine_threadsafe(open_both(), loop).result(10)
        assert asyncio.run(koala.track("Step", email="a@acme.com")) is None
        assert koala.stats().dropped["closed"] == 1
        with pytest.raises(ClientClosedError, match="opened in another event loop"):
            asyncio.run(strict.track("Step", email="a@acme.com"))
        assert strict.stats().accepted == 0
        for client in (koala, strict):
            asyncio.run_coroutine_threadsafe(client.aclose(0), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        owner.join()
        loop.close()
    invariant(koala.stats())
