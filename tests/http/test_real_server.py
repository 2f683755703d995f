"""Delivery promises proven against a real HTTP server on 127.0.0.1 that each test starts and stops.

Every test checks the stats invariant and, at the server, that each message_id arrived exactly
once (or at least once, where a reset or a timeout made the outcome ambiguous to the client).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from wire_check import invariant

from koala_async import DeliveryFailure, KoalaClient, RetryPolicy, Stats
from koala_async._engine import _INITIAL_LIMIT
from koala_async.testing import FakeCollector, Received, Reply

pytestmark = pytest.mark.anyio
FAST = RetryPolicy(backoff=0, max_attempts=20)


@pytest.fixture
async def collector() -> AsyncIterator[tuple[FakeCollector, str]]:
    fake = FakeCollector()
    async with fake.serve(host="127.0.0.1", port=0) as base_url:
        yield fake, base_url
    assert fake.violations == [], fake.violations


def settled(stats: Stats) -> None:
    invariant(stats)
    assert stats.pending == 0, stats


async def send_mix(koala: KoalaClient, people: int, seed: int = 0) -> list[str | None]:
    """Queue a mix of every kind for ``people`` people; return the message_ids made."""
    rng = random.Random(seed)
    ids: list[str | None] = []
    for p in range(people):
        email = f"person{p}@acme.com"
        for _ in range(rng.randint(1, 4)):
            ids.append(await koala.track("Step", email=email, properties={"p": p}))
        ids.append(await koala.page(email=email, name="Home"))
        await koala.identify(email=email, traits={"p": p}, message_id=f"identify-{p}")
        ids.append(f"identify-{p}")
        if p % 10 == 0:
            await koala.account_identify(
                domain=f"company{p}.com", traits={"p": p}, group_id="dev", message_id=f"acct-{p}"
            )
            ids.append(f"acct-{p}")
            ids.append(await koala.account_track("Workspace Created", domain=f"company{p}.com"))
    return ids


async def test_a_thousand_people_every_entry_exactly_once(
    collector: tuple[FakeCollector, str],
) -> None:
    fake, base_url = collector
    async with KoalaClient("pk_test", base_url=base_url, user_agent="e2e/1.0") as koala:
        ids = await send_mix(koala, 1000)
        # more than 30 of a kind for one person must become several requests
        for i in range(75):
            ids.append(await koala.track("Burst", email="busy@acme.com", properties={"i": i}))
    assert fake.message_ids() == Counter(dict.fromkeys(ids, 1))
    for received in fake.requests:
        body = received.body
        for kind in ("events", "identifies", "page_views"):
            assert len(body.get(kind, [])) <= 30
    people = Counter(r.body.get("email") for r in fake.requests if r.kind == "profile")
    assert people["busy@acme.com"] >= 3
    settled(koala.stats())
    assert koala.stats().delivered == len(ids)


def fail_some(rate: float, reply: Reply, seed: int = 7) -> Any:
    rng = random.Random(seed)

    def responder(received: Received) -> Reply | None:
        return reply if rng.random() < rate else None

    return responder


async def run(
    base_url: str, people: int = 200, **kwargs: Any
) -> tuple[KoalaClient, list[str | None], list[DeliveryFailure]]:
    failures: list[DeliveryFailure] = []
    kwargs.setdefault("retry", FAST)
    async with KoalaClient(
        "pk_test", base_url=base_url, on_error=failures.append, **kwargs
    ) as koala:
        ids = await send_mix(koala, people)
    settled(koala.stats())
    return koala, ids, failures


async def test_thirty_percent_500s(collector: tuple[FakeCollector, str]) -> None:
    fake, base_url = collector
    fake.responder = fail_some(0.3, Reply(status=500))
    koala, ids, _ = await run(base_url)
    assert fake.message_ids() == Counter(dict.fromkeys(ids, 1))
    statuses = Counter(r.status for r in fake.requests)
    assert statuses[500] > 0.2 * len(fake.requests)
    assert koala.stats().retries == statuses[500]


async def test_429_with_retry_after(collector: tuple[FakeCollector, str]) -> None:
    fake, base_url = collector
    fake.fail_next(5, status=429, retry_after=0.2)
    started = anyio.current_time()
    koala, ids, _ = await run(base_url, people=50)
    assert anyio.current_time() - started >= 0.2
    assert fake.message_ids() == Counter(dict.fromkeys(ids, 1))
    assert koala.stats().retries >= 5


async def test_twenty_percent_connections_reset(collector: tuple[FakeCollector, str]) -> None:
    fake, base_url = collector
    fake.responder = fail_some(0.2, Reply(reset=True))
    koala, ids, _ = await run(base_url)
    assert sum(r.status == 0 for r in fake.requests) > 0.1 * len(fake.requests)
    received = fake.message_ids()
    assert set(received) == set(ids), "at least once"
    assert koala.stats().delivered == len(ids)


async def test_server_down_then_back() -> None:
    fake = FakeCollector()
    async with fake.serve(host="127.0.0.1", port=0) as base_url:
        pass  # learn a free port, then leave it closed: the server is down
    port = int(base_url.rsplit(":", 1)[1])
    policy = RetryPolicy(backoff=0.05, max_backoff=0.3, max_attempts=100, budget=30)
    async with KoalaClient("pk_test", base_url=base_url, retry=policy) as koala:
        ids = await send_mix(koala, 50)
        await anyio.sleep(2)  # down for two seconds while the client keeps retrying
        assert koala.stats().delivered == 0
        async with fake.serve(host="127.0.0.1", port=port):
            await koala.flush(timeout=20)
    settled(koala.stats())
    assert fake.message_ids() == Counter(dict.fromkeys(ids, 1))


async def test_responses_slower_than_the_timeout(collector: tuple[FakeCollector, str]) -> None:
    fake, base_url = collector
    fake.fail_next(3, status=200, delay=1.0)
    koala, ids, _ = await run(base_url, people=20, timeout=0.2)
    assert set(fake.message_ids()) == set(ids), "at least once"
    assert max(fake.message_ids().values()) == 2, "the late answers arrived, then were retried"
    assert koala.stats().delivered == len(ids)
    assert koala.stats().retries >= 3


async def test_413_over_a_size(collector: tuple[FakeCollector, str]) -> None:
    fake, base_url = collector
    fake.responder = lambda received: Reply(status=413) if len(received.raw) > 2000 else None
    async with KoalaClient("pk_test", base_url=base_url, retry=FAST, flush_interval=60) as koala:
        ids = [
            await koala.track("Big", email="a@b.co", properties={"pad": "x" * 100})
            for _ in range(30)
        ]
        too_big = await koala.track("Huge", email="c@d.co", properties={"pad": "y" * 3000})
    stats = koala.stats()
    settled(stats)
    assert fake.message_ids() == Counter(dict.fromkeys(ids, 1))
    assert stats.dropped["too_large"] == 1
    assert too_big not in fake.message_ids()
    assert [r.status for r in fake.requests].count(413) >= 2, "the batch was split"


async def test_400_for_one_person_only(collector: tuple[FakeCollector, str]) -> None:
    fake, base_url = collector
    fake.responder = lambda r: (
        Reply(status=400) if r.body.get("email") == "person7@acme.com" else None
    )
    koala, ids, failures = await run(base_url, people=30)
    lost = {e.get("message_id") for f in failures for e in f.entries}
    assert {f.ids.get("email") for f in failures} == {"person7@acme.com"}
    assert fake.message_ids() == Counter(dict.fromkeys(set(ids) - lost, 1))
    assert koala.stats().dropped["rejected"] == len(lost) > 0


async def test_401_for_everything(collector: tuple[FakeCollector, str]) -> None:
    fake, base_url = collector
    fake.responder = lambda received: Reply(status=401)
    koala, ids, failures = await run(base_url, people=100)
    stats = koala.stats()
    assert stats.dropped["unauthorized"] == len(ids)
    assert stats.delivered == 0
    # The first wave (as many as may be in flight at first), then nothing: no retries.
    assert len(fake.requests) <= _INITIAL_LIMIT, "it stops after the first answers"
    assert sum(len(f.entries) for f in failures) == len(ids)


async def test_random_faults_on_a_real_server(collector: tuple[FakeCollector, str]) -> None:
    fake, base_url = collector
    rng = random.Random(11)
    faults = [
        Reply(status=500),
        Reply(status=503),
        Reply(status=429, retry_after=0),
        Reply(status=400),
    ]

    def responder(received: Received) -> Reply | None:
        return rng.choice(faults) if rng.random() < 0.3 else None

    fake.responder = responder
    koala, ids, failures = await run(
        base_url, people=300, retry=RetryPolicy(backoff=0, max_attempts=3)
    )
    lost = Counter(e.get("message_id") for f in failures for e in f.entries)
    got = fake.message_ids()
    assert max(got.values()) == 1
    assert max(lost.values(), default=1) == 1
    assert set(got) | set(lost) == set(ids)
    assert not set(got) & set(lost)
    assert koala.stats().delivered == len(got)
