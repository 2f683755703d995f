"""Issue 10's production promises, with default settings, against real HTTP servers on
127.0.0.1 that each test starts and stops: a busy site at a 50 ms round trip, a bare
``await track()`` loop, a shutdown under errors, an outage, and a 429 that holds only its own batch.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator

import anyio
import pytest
from anyio.abc import SocketStream
from wire_check import free_port, invariant

from koala_async import KoalaClient, RetryPolicy
from koala_async.testing import FakeCollector, Received, Reply

pytestmark = pytest.mark.anyio


@pytest.fixture
async def slow_collector() -> AsyncIterator[tuple[FakeCollector, str]]:
    """A collector that answers every request 50 ms late, as a real round trip would."""
    fake = FakeCollector()
    fake.responder = lambda received: Reply(status=200, delay=0.05)
    async with fake.serve(host="127.0.0.1", port=0) as base_url:
        yield fake, base_url
    assert fake.violations == []


async def test_a_busy_site_at_a_50ms_round_trip_loses_nothing_with_defaults(
    slow_collector: tuple[FakeCollector, str],
) -> None:
    """Every 10 ms a burst of new visitors, 2 entries each: 1,000 entries/s for 2 s. A fixed
    8 requests in flight delivered 313 entries/s here and dropped over half at close."""
    fake, base_url = slow_collector
    ids: list[str | None] = []
    async with KoalaClient("pk_test", base_url=base_url) as koala:
        for burst in range(200):
            for visitor in range(5):
                email = f"v{burst}-{visitor}@acme.com"
                ids.append(await koala.page(email=email, name="Home"))
                ids.append(await koala.track("Viewed Pricing", email=email))
            await anyio.sleep(0.01)
        peak = koala.stats().concurrency
    stats = koala.stats()
    invariant(stats)
    assert (stats.delivered, stats.dropped_total, stats.pending) == (2000, 0, 0)
    assert fake.message_ids() == Counter(dict.fromkeys(ids, 1))
    assert peak > 8, "the limiter grew past where it started"


async def test_a_bare_track_loop_drops_nothing_and_stays_bounded() -> None:
    """A backfill: 60,000 events, 10 per person, through a queue of 5,000, with
    on_full="block" (a backfill's choice: "pace" waits 50 ms at most, for handlers). It
    once sent no request during the loop and dropped two thirds as queue_full.
    (benchmarks/ runs the issue's 300,000 events; this keeps the suite quick on 2 cores.)"""
    fake = FakeCollector()
    async with fake.serve(host="127.0.0.1", port=0) as base_url:
        # The collector shares this event loop: on a loaded machine its answers can be slow
        # enough to time out, which is not what this test is about.
        async with KoalaClient(
            "pk_test", base_url=base_url, max_queue_size=5_000, timeout=60, on_full="block"
        ) as koala:
            most = 0
            for i in range(60_000):
                await koala.track("Imported", email=f"p{i // 10}@acme.com")
                if i % 500 == 0:
                    most = max(most, koala.stats().pending)
            sent_during_loop = koala.stats().requests
        stats = koala.stats()
    invariant(stats)
    assert (stats.delivered, stats.dropped_total) == (60_000, 0)
    assert sum(fake.message_ids().values()) == 60_000
    assert most <= 5_000, "memory is bounded by max_queue_size"
    assert sent_during_loop > 0, "the senders ran while the loop did"


async def close_under_500s(run: int, policy: RetryPolicy, shutdown_timeout: float = 10) -> None:
    """3,000 events over 300 people, 30% of answers a 500, then the close: nothing lost.

    What is tested is the drain: waits cut to fit the shutdown deadline, and batches backing
    off not holding up the others. A batch is given up when all its ``max_attempts`` fail,
    0.3**10 = 6e-6 per batch at random: at the default 10, over ~300 batches a run and 40
    runs, one CI run in about ten lost a batch that way (seen: 10 entries dropped as
    ``retries_exhausted``). With 25 attempts that is 3e-11 a run, so a loss is the drain's.
    """
    rng = random.Random(run)
    fake = FakeCollector()
    fake.responder = lambda received: Reply(status=500) if rng.random() < 0.3 else None
    async with (
        fake.serve(host="127.0.0.1", port=0) as base_url,
        KoalaClient(
            "pk_test", base_url=base_url, retry=policy, shutdown_timeout=shutdown_timeout
        ) as koala,
    ):
        ids = [
            await koala.track("Step", email=f"p{i % 300}@acme.com", properties={"i": i})
            for i in range(3000)
        ]
    stats = koala.stats()
    invariant(stats)
    assert (stats.delivered, stats.dropped_total) == (3000, 0), stats
    assert set(fake.message_ids()) == set(ids)


@pytest.mark.parametrize("run", range(20))
async def test_a_shutdown_under_30_percent_500s_loses_nothing(run: int) -> None:
    await close_under_500s(run, RetryPolicy(max_attempts=25, backoff=0.02, max_backoff=0.5))


@pytest.mark.parametrize("run", range(5))
async def test_the_same_with_the_default_backoff(run: int) -> None:
    """Backoffs of up to 30 s against a 3 s deadline: only waits cut to fit it deliver all
    (with the cut removed, 9 runs of 10 drop entries; closes take ~1.5 s with it). Before
    batches lent their place while backing off, closes took the whole 10 s of the default
    deadline, and one run in ten dropped hundreds (lending has its own test below)."""
    await close_under_500s(run, RetryPolicy(max_attempts=25), shutdown_timeout=3)


async def test_a_batch_backing_off_lends_its_place_to_other_people() -> None:
    """One request in flight at most, and one person's batch told to come back in 30 s:
    meanwhile another person's batch goes. (Workers once slept their backoff in their place
    under the limit: with errors cutting it to 2-3, as 30% 503s do, and default backoffs,
    a close took the whole 10 s, dropping hundreds of entries in one run of ten.)"""
    fake = FakeCollector()
    b_arrived = anyio.Event()

    def a_waits(received: Received) -> Reply | None:
        if received.body["email"] == "a@acme.com":
            return Reply(status=503, retry_after=30)
        b_arrived.set()
        return None

    fake.responder = a_waits
    async with (
        fake.serve(host="127.0.0.1", port=0) as base_url,
        KoalaClient(
            "pk_test", base_url=base_url, max_concurrent_requests=1, shutdown_timeout=0.5
        ) as koala,
    ):
        await koala.track("Waits", email="a@acme.com")
        await koala.flush(timeout=0.2)  # sent, and backing off for 30 s
        later = await koala.track("Goes", email="b@acme.com")
        with anyio.fail_after(10):  # the backoff is 30 s: delivered during it, or never
            await b_arrived.wait()
    stats = koala.stats()
    invariant(stats)
    assert (stats.delivered, stats.dropped_total) == (1, 1), stats
    assert later in fake.message_ids()


@pytest.mark.parametrize("status", [503, 429])
async def test_a_wait_under_way_when_the_close_begins_is_cut_to_fit_the_deadline(
    status: int,
) -> None:
    """Every batch's first answer asks for 30 s (a 503's backoff, or a 429's pause for all
    senders), and the close begins while they wait, with 3 s to go: the waits already under
    way are cut too, so the batches are tried again in time instead of dropped."""
    fake = FakeCollector()
    first: set[str] = set()

    def once_then_ok(received: Received) -> Reply | None:
        message_id = received.body["events"][0]["message_id"]
        if message_id in first:
            return None
        first.add(message_id)
        return Reply(status=status, retry_after=30)

    fake.responder = once_then_ok
    async with (
        fake.serve(host="127.0.0.1", port=0) as base_url,
        KoalaClient("pk_test", base_url=base_url, shutdown_timeout=3) as koala,
    ):
        ids = [await koala.track("Signed Up", email=f"p{i}@acme.com") for i in range(4)]
        await koala.flush(timeout=0.5)  # sends them, and comes back while they wait
        assert (len(first), koala.stats().pending) == (4, 4), "all four wait 30 s"
    stats = koala.stats()
    invariant(stats)
    assert (stats.delivered, stats.dropped_total) == (4, 0), stats
    assert set(fake.message_ids()) == set(ids)


async def test_an_outage_neither_blocks_calls_nor_storms_and_loses_nothing() -> None:
    """The endpoint is down for 5 s (it accepts connections and drops them, like a crashed
    upstream behind a proxy) while a handler-like task keeps calling track().

    Counted, not timed: connections made while the client's circuit was open are probes
    (timestamps taken by a server sharing a loaded event loop made this flaky). That a probe
    goes one at a time is the circuit's pure rule, pinned in tests/test_decisions.py."""
    port = free_port()
    connections = 0
    probes = 0
    policy = RetryPolicy(backoff=0.1, max_backoff=1.0)
    koala = KoalaClient(
        "pk_test", base_url=f"http://127.0.0.1:{port}", retry=policy, shutdown_timeout=15
    )

    async def drop(stream: SocketStream) -> None:
        nonlocal connections, probes
        connections += 1
        probes += koala.stats().circuit == "open"
        try:
            await stream.receive()
            await anyio.sleep(0.05)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
        finally:
            await stream.aclose()

    ids: list[str | None] = []
    opened = False
    fake = FakeCollector()
    async with koala:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, drop)
            for i in range(250):  # 5 s of a handler calling 50 times a second
                ids.append(await koala.track("Clicked", email=f"p{i % 40}@acme.com"))
                opened = opened or koala.stats().circuit == "open"
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        await listener.aclose()
        async with fake.serve(host="127.0.0.1", port=port):
            await koala.flush(timeout=15)
    stats = koala.stats()
    invariant(stats)
    assert opened, "the circuit opened"
    assert None not in ids, "every call was taken, none waited for room"
    assert (stats.delivered, stats.dropped_total) == (250, 0), stats
    assert fake.message_ids() == Counter(dict.fromkeys(ids, 1))
    assert probes >= 2, "the endpoint was probed while down"
    assert connections < 60, f"{connections} connections in 5 s: a retry storm"


async def test_a_429_holds_its_own_batch_and_stalls_nobody_else() -> None:
    """A 429 with ``Retry-After`` holds the batch that met it; another person's batch goes
    meanwhile (every 429 once paused every sender: at 0.5% random 429s with
    ``Retry-After: 1``, 48% of a busy site's entries were lost)."""
    fake = FakeCollector()
    order: list[tuple[str, int]] = []

    def reply(received: Received) -> Reply | None:
        email = received.body.get("email", "")
        if email == "first@acme.com" and not order:
            order.append((email, 429))
            return Reply(status=429, retry_after=30)
        order.append((email, 200))
        return None

    fake.responder = reply
    async with (
        fake.serve(host="127.0.0.1", port=0) as base_url,
        KoalaClient("pk_test", base_url=base_url, shutdown_timeout=3) as koala,
    ):
        await koala.track("A", email="first@acme.com")
        await koala.flush(timeout=0.2)  # answered 429: its batch waits 30 s
        assert order == [("first@acme.com", 429)], "the 429 was given"
        await koala.track("B", email="second@acme.com")
        await koala.flush(timeout=1)
        assert order[1:] == [("second@acme.com", 200)], "the other batch went meanwhile"
    stats = koala.stats()
    invariant(stats)
    assert (stats.delivered, stats.dropped_total) == (2, 0), "the held one went at the close"
    assert order[2:] == [("first@acme.com", 200)]
