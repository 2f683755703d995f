"""Delivery over MockTransport: retries, splitting, rejections, fatal keys, backpressure."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from wire_check import check_request, invariant

from koala_async import (
    DeliveryError,
    DeliveryFailure,
    KoalaClient,
    QueueFullError,
    RetryPolicy,
)
from koala_async._reporter import MAX_WAITING
from koala_async.testing import FakeCollector
from koala_async.testing import Reply as Answer

pytestmark = pytest.mark.anyio
FAST = RetryPolicy(backoff=0, max_attempts=5)
Reply = Callable[[httpx.Request, dict[str, Any]], Awaitable[httpx.Response] | httpx.Response]


class Server:
    """A MockTransport handler that answers with ``reply`` and counts message_ids delivered."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.delivered: Counter[str] = Counter()
        self.statuses: list[int] = []
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = check_request(request)
        response = self.reply(request, body)
        if not isinstance(response, httpx.Response):
            response = await response
        self.statuses.append(response.status_code)
        if response.is_success:
            self.bodies.append(body)
            for kind in ("events", "identifies", "page_views"):
                for entry in body.get(kind, []):
                    self.delivered[entry.get("message_id") or json.dumps(entry)] += 1
        return response

    def client(self, **kwargs: Any) -> KoalaClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self))
        kwargs.setdefault("retry", FAST)
        return KoalaClient("pk_test", http_client=http, **kwargs)


def ok(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"ok": True})


@pytest.mark.parametrize(("status", "cut"), [(500, False), (503, True)])
async def test_a_503_cuts_the_number_in_flight_and_a_500_does_not(status: int, cut: bool) -> None:
    """Each batch's first answer is ``status``; 200 people wait, so the limit (32 at first)
    grows on the successes unless failures cut it: a 503 says the server has too much to
    do; a 500 says one request failed."""
    failed: set[str] = set()

    def once(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        if body["email"] in failed:
            return httpx.Response(200)
        failed.add(body["email"])
        return httpx.Response(status)

    server = Server(once)
    async with server.client() as koala:
        for i in range(200):
            await koala.track("Step", email=f"p{i}@acme.com")
        await koala.flush()
        limit = koala.stats().concurrency
    assert len(server.delivered) == 200
    assert (limit < 32) is cut, limit


async def test_5xx_and_transport_errors_are_retried_with_the_same_message_ids() -> None:
    seen: Counter[str] = Counter()

    def flaky(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        ids = tuple(e["message_id"] for e in body["events"])
        seen[ids[0]] += 1
        if seen[ids[0]] == 1:
            raise httpx.ReadTimeout("slow", request=request)
        if seen[ids[0]] == 2:
            raise httpx.RemoteProtocolError("reset", request=request)
        if seen[ids[0]] in (3, 4):
            return httpx.Response(503 if seen[ids[0]] == 3 else 408)
        return httpx.Response(200)

    server = Server(flaky)
    async with server.client() as koala:
        ids = [await koala.track("A", email=f"p{i}@acme.com") for i in range(10)]
    stats = koala.stats()
    assert stats.delivered == 10
    assert stats.retries == 40
    assert stats.requests == 50
    assert server.delivered == Counter(dict.fromkeys(ids, 1))
    invariant(stats)


async def test_retries_end_after_max_attempts() -> None:
    failures: list[DeliveryFailure] = []
    server = Server(lambda request, body: httpx.Response(500))
    async with server.client(on_error=failures.append) as koala:
        mid = await koala.track("A", email="a@b.co")
    stats = koala.stats()
    assert stats.dropped["retries_exhausted"] == 1
    assert stats.requests == FAST.max_attempts
    assert [(f.reason, f.status, f.kind, f.ids) for f in failures] == [
        ("retries_exhausted", 500, "profile", {"email": "a@b.co"})
    ]
    assert failures[0].entries[0]["message_id"] == mid
    invariant(stats)


async def test_retries_end_when_the_time_budget_is_spent() -> None:
    async def slow_503(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        await anyio.sleep(0.2)
        return httpx.Response(503)

    server = Server(slow_503)
    policy = RetryPolicy(backoff=0, max_attempts=100, budget=0.5)
    async with server.client(retry=policy) as koala:
        await koala.track("A", email="a@b.co")
    assert koala.stats().dropped["retries_exhausted"] == 1
    assert server.statuses == [503, 503, 503]  # 0.6 s of failing spends a 0.5 s budget


@pytest.mark.parametrize("retry_after", ["0", "Wed, 21 Oct 2015 07:28:00 GMT", "200"])
async def test_retry_after_on_a_503_is_a_lower_bound_never_a_reason_to_give_up(
    retry_after: str,
) -> None:
    answers = iter([503, 503, 200])
    server = Server(
        lambda request, body: httpx.Response(next(answers), headers={"Retry-After": retry_after})
    )
    # 200 s is capped at max_retry_after (it once dropped the batch at once: a wait past the
    # budget); 0 and a past date still wait our own backoff (they once made back-to-back tries).
    policy = RetryPolicy(backoff=0.05, max_backoff=0.05, max_attempts=3, max_retry_after=0.1)
    async with server.client(retry=policy) as koala:
        started = anyio.current_time()
        await koala.track("A", email="a@b.co")
        await koala.flush()
        elapsed = anyio.current_time() - started
    assert koala.stats().delivered == 1
    assert server.statuses == [503, 503, 200]
    assert elapsed > 0, "waited between attempts"
    invariant(koala.stats())


@pytest.mark.parametrize("status", [400, 409, 422, 501])
async def test_other_client_errors_drop_only_that_batch(status: int) -> None:
    def reply(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        return httpx.Response(status if body.get("email") == "bad@acme.com" else 200)

    failures: list[DeliveryFailure] = []
    server = Server(reply)
    async with server.client(on_error=failures.append) as koala:
        await koala.track("A", email="bad@acme.com")
        for i in range(5):
            await koala.track("A", email=f"p{i}@acme.com")
    stats = koala.stats()
    assert (stats.delivered, stats.dropped["rejected"], stats.retries) == (5, 1, 0)
    assert [(f.reason, f.status) for f in failures] == [("rejected", status)]


async def test_413_splits_the_batch_until_it_fits() -> None:
    def reply(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        big = any(e.get("properties", {}).get("big") for e in body.get("events", []))
        return httpx.Response(413 if len(request.content) > 1200 or big else 200)

    failures: list[DeliveryFailure] = []
    server = Server(reply)
    async with server.client(on_error=failures.append, flush_interval=60) as koala:
        ids = [await koala.track("A", email="a@b.co", properties={"i": i}) for i in range(29)]
        await koala.track("A", email="a@b.co", properties={"big": "x" * 10})
    stats = koala.stats()
    assert stats.delivered == 29
    assert stats.dropped["too_large"] == 1
    assert [f.reason for f in failures] == ["too_large"]
    assert failures[0].entries[0]["properties"] == {"big": "x" * 10}
    assert server.delivered == Counter(dict.fromkeys(ids, 1))
    assert [e["properties"]["i"] for b in server.bodies for e in b["events"]] == list(range(29))
    invariant(stats)


async def test_429_pauses_all_sending_and_uses_no_attempts() -> None:
    limited = {"left": 6}

    def reply(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        if limited["left"]:
            limited["left"] -= 1
            return httpx.Response(429, headers={"Retry-After": "0.05"})
        return httpx.Response(200)

    server = Server(reply)
    policy = RetryPolicy(backoff=0, max_attempts=1)
    async with server.client(retry=policy) as koala:
        started = anyio.current_time()
        for i in range(3):
            await koala.track("A", email=f"p{i}@acme.com")
        await koala.flush()
        elapsed = anyio.current_time() - started
    stats = koala.stats()
    assert stats.delivered == 3
    assert stats.dropped_total == 0
    assert server.statuses.count(429) == 6
    assert elapsed >= 0.05, "sending paused for Retry-After"


@pytest.mark.parametrize(
    ("status", "content", "reason", "message"),
    [
        (401, b'{"error": "unauthorized"}', "unauthorized", "refused the public API key"),
        (403, b"", "unauthorized", "refused the public API key"),
        (404, b"", "gone", "is not Koala's ingestion API"),
        (410, b"", "gone", "is not Koala's ingestion API"),
    ],
)
async def test_a_refused_key_is_fatal_reported_once_and_fails_fast(
    status: int, content: bytes, reason: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server(lambda request, body: httpx.Response(status, content=content))
    failures: list[DeliveryFailure] = []
    caplog.set_level(logging.WARNING, "koala_async")
    async with server.client(on_error=failures.append, flush_interval=60) as koala:
        for i in range(50):
            await koala.track("A", email=f"p{i}@acme.com")
        with pytest.raises(DeliveryError, match=message):
            await koala.flush()
        requests = len(server.statuses)
        late = [await koala.track("A", email=f"late{i}@acme.com") for i in range(1000)]
        assert late == [None] * 1000, "a dropped call returns None, not an id never sent"
        assert koala.stats().pending == 0, "nothing piles up once the key is refused"
    stats = koala.stats()
    assert stats.dropped[reason] == 1050
    assert requests <= 9, "in-flight requests, then one confirming probe; then nothing more"
    assert len(server.statuses) == requests
    assert sum(len(f.entries) for f in failures) == 1050
    errors = [r for r in caplog.records if message in r.getMessage()]
    assert len(errors) == 1
    assert errors[0].levelno == logging.ERROR
    invariant(stats)


async def test_on_full_drop_counts_and_reports() -> None:
    failures: list[DeliveryFailure] = []
    server = Server(ok)
    async with server.client(
        max_queue_size=10, flush_interval=60, on_error=failures.append, on_full="drop"
    ) as k:
        ids = [await k.track("A", email=f"p{i}@acme.com") for i in range(15)]
        assert k.stats().pending == 10
        assert ids[10:] == [None] * 5, "a dropped call returns None"
    stats = k.stats()
    assert (stats.delivered, stats.dropped["queue_full"]) == (10, 5)
    assert [f.reason for f in failures] == ["queue_full"] * 5
    assert {f.ids["email"] for f in failures} == {f"p{i}@acme.com" for i in range(10, 15)}
    invariant(stats)


async def test_on_full_raise() -> None:
    server = Server(ok)
    async with server.client(max_queue_size=2, flush_interval=60, on_full="raise") as koala:
        await koala.track("A", email="a@b.co")
        await koala.track("A", email="a@b.co")
        with pytest.raises(QueueFullError, match="on_full='pace'"):
            await koala.track("A", email="a@b.co")
    assert koala.stats().accepted == koala.stats().delivered == 2


async def test_on_full_block_waits_for_room() -> None:
    gate = anyio.Event()

    async def reply(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        await gate.wait()
        return httpx.Response(200)

    server = Server(reply)
    done = 0
    async with server.client(max_queue_size=5, flush_interval=0.01, on_full="block") as koala:

        async def produce() -> None:
            nonlocal done
            for i in range(20):
                await koala.track("A", email=f"p{i}@acme.com")
                done += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            await anyio.sleep(0.1)
            assert done == 5, "the producer waits while the queue is full"
            gate.set()
    stats = koala.stats()
    assert (done, stats.delivered, stats.dropped_total) == (20, 20, 0)


async def test_on_full_pace_waits_a_bounded_time_then_drops() -> None:
    """The server holds every answer, so no room comes while the circuit stays closed: a
    paced call waits MAX_BLOCK (50 ms) at most, then its entry is dropped as queue_full. It
    once waited for room as long as delivery took (31-44 s under 10% random 502/503)."""
    gate = anyio.Event()

    async def reply(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        await gate.wait()
        return httpx.Response(200)

    server = Server(reply)
    async with server.client(max_queue_size=5, flush_interval=0.01) as koala:
        with anyio.fail_after(10):  # 15 waits of 50 ms, or a hang
            for i in range(20):
                await koala.track("A", email=f"p{i}@acme.com")
        assert koala.stats().dropped["queue_full"] == 15
        gate.set()
    stats = koala.stats()
    assert (stats.delivered, stats.dropped_total) == (5, 15)
    invariant(stats)


async def test_the_on_error_backlog_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """A callback that does not keep up: failures beyond MAX_WAITING are counted, not held
    (the queue was unbounded: RSS 72 -> 221 MB in 40 s of an outage with a 10 ms callback),
    and a warning says so once."""
    gate = anyio.Event()
    heard: list[DeliveryFailure] = []

    async def slow(failure: DeliveryFailure) -> None:
        heard.append(failure)
        await gate.wait()

    server = Server(ok)
    async with server.client(
        max_queue_size=10, flush_interval=60, on_error=slow, on_full="drop"
    ) as koala:
        for i in range(10 + 2 * MAX_WAITING):
            await koala.track("A", email=f"p{i}@acme.com")
        assert koala.stats().dropped["queue_full"] == 2 * MAX_WAITING, "every entry counted"
        assert koala._engine.reporter.missed == MAX_WAITING
        gate.set()
    assert len(heard) == MAX_WAITING
    warned = [r for r in caplog.records if "on_error is slower" in r.getMessage()]
    assert len(warned) == 1
    assert any(f"not handed {MAX_WAITING} failures" in r.getMessage() for r in caplog.records)
    invariant(koala.stats())


async def test_callbacks_may_be_async_may_raise_and_may_flush(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def reply(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        return httpx.Response(400 if body["email"].startswith("bad") else 200)

    seen: list[str] = []
    holder: list[KoalaClient] = []

    async def on_error(failure: DeliveryFailure) -> None:
        seen.append(failure.ids["email"])
        await holder[0].flush()  # must not deadlock, even with one sender
        if len(seen) == 1:
            raise RuntimeError("a buggy callback")

    server = Server(reply)
    async with server.client(on_error=on_error, max_concurrent_requests=1) as koala:
        holder.append(koala)
        await koala.track("A", email="bad1@acme.com")
        await koala.track("A", email="good@acme.com")
        await koala.flush()
        await koala.track("A", email="bad2@acme.com")
    assert sorted(seen) == ["bad1@acme.com", "bad2@acme.com"]
    assert koala.stats().delivered == 1
    assert any("on_error callback raised" in r.getMessage() for r in caplog.records)


async def test_the_shutdown_deadline_bounds_closing_and_reports_what_is_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def hang(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        await anyio.sleep(3600)
        raise AssertionError("unreachable")

    failures: list[DeliveryFailure] = []
    server = Server(hang)
    koala = server.client(on_error=failures.append, shutdown_timeout=0.2)
    async with koala:
        for i in range(40):
            await koala.track("A", email=f"p{i % 4}@acme.com")
    stats = koala.stats()
    assert stats.dropped["shutdown_timeout"] == 40
    assert stats.pending == 0
    assert sum(len(f.entries) for f in failures) == 40
    assert any(
        "not delivered within the shutdown deadline" in r.getMessage() for r in caplog.records
    )
    invariant(stats)


async def test_cancelling_the_owner_still_flushes() -> None:
    server = Server(ok)
    with anyio.move_on_after(0.05):
        async with server.client(flush_interval=3600) as koala:
            for i in range(100):
                await koala.track("A", email=f"p{i % 10}@acme.com")
            await anyio.sleep(3600)
    assert koala.stats().delivered == 100
    assert sum(server.delivered.values()) == 100


async def test_flush_and_aclose_take_a_timeout() -> None:
    async def slow(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        await anyio.sleep(0.3)
        return httpx.Response(200)

    server = Server(slow)
    async with server.client() as koala:
        await koala.track("A", email="a@b.co")
        first = await koala.flush(timeout=0.01)
        assert (first.delivered, first.pending) == (0, 1)
        await koala.track("B", email="b@b.co")
        closed = await koala.aclose(timeout=5)
    assert (closed.delivered, closed.dropped, closed.pending) == (2, 0, 0)


async def test_a_person_s_batches_share_lanes_identifies_keep_order_and_all_take_turns() -> None:
    """The ordering rule (docs/decisions.md): a person's events go several requests at a
    time; a request with an identify goes alone, after every request before it was
    answered; the others take turns with the busy person."""
    in_flight: Counter[str] = Counter()
    alone: dict[str, bool] = {}  # a request with an identify is in flight for this person
    overlap: list[int] = []
    broken: list[str] = []
    order: list[str] = []
    requests: list[tuple[list[int], list[int]]] = []  # the hot person's: (events, identifies)

    async def reply(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        who = body["email"]
        identifies = body.get("identifies", [])
        if alone.get(who) or (identifies and in_flight[who]):
            broken.append(f"a request for {who} flew beside one with an identify")
        in_flight[who] += 1
        alone[who] = bool(identifies)
        overlap.append(in_flight[who])
        order.append(who)
        if who == "hot@acme.com":
            events = [e["properties"]["i"] for e in body.get("events", [])]
            requests.append((events, [e["traits"]["i"] for e in identifies]))
        await anyio.sleep(0.001)
        in_flight[who] -= 1
        alone[who] = False
        return httpx.Response(200)

    server = Server(reply)
    async with server.client(max_concurrent_requests=4, flush_interval=60) as koala:
        for i in range(300):
            if i % 100 == 50:
                await koala.identify(email="hot@acme.com", traits={"i": i})
            await koala.track("A", email="hot@acme.com", properties={"i": i})
        for i in range(6):
            await koala.track("A", email=f"p{i}@acme.com")
    assert broken == []
    assert max(overlap) > 1, "a person's batches of events share the lanes"
    events = sorted(i for batch, _ in requests for i in batch)
    assert events == list(range(300)), "every entry arrived once"
    for at, (_, identifies) in enumerate(requests):
        for k in identifies:  # made before event k: what was made before came before it
            assert all(i < k for batch, _ in requests[:at] for i in batch), k
            assert all(i >= k for batch, _ in requests[at + 1 :] for i in batch), k
    assert [k for _, ids in requests for k in ids] == [50, 150, 250], "identifies in order"
    assert order.index("p5@acme.com") < len(order) - 1, "the others do not wait for the hot person"


async def test_the_collector_finds_the_ordering_rule_kept_at_a_real_round_trip() -> None:
    """One busy person at a 50 ms round trip, identifies among the events, two batches
    retried, over a socket: FakeCollector.order_problems() finds nothing wrong."""
    fake = FakeCollector(responder=lambda received: Answer(delay=0.05))
    fake.fail_next(2, status=503)  # the first two batches are retried while others go
    retry = RetryPolicy(backoff=0.05)
    async with fake.serve() as url, KoalaClient("pk_test", base_url=url, retry=retry) as koala:
        for i in range(600):
            if i % 150 == 75:
                await koala.identify(email="hot@acme.com", traits={"i": i})
            await koala.track("A", email="hot@acme.com", properties={"i": i})
            if i % 50 == 0:
                await anyio.sleep(0.002)  # as calls made over time: sent_at moves on
        await koala.flush()
    assert len(fake.message_ids()) == 604
    assert fake.order_problems() == []
    identified = [e.traits["i"] for e in fake.identifies]
    assert identified == [75, 225, 375, 525]


async def test_repeated_drops_log_one_warning_not_one_per_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = Server(lambda request, body: httpx.Response(422))
    caplog.set_level(logging.DEBUG, "koala_async")
    async with server.client() as koala:
        for i in range(50):
            await koala.track("A", email=f"p{i}@acme.com")
    assert koala.stats().dropped["rejected"] == 50
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "dropped 1 entry (rejected): HTTP 422 from /batch" in warnings[0].getMessage()


async def test_a_long_retry_after_on_429_does_not_spend_the_budget() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "0.3"}), httpx.Response(200)])
    server = Server(lambda request, body: next(answers))
    policy = RetryPolicy(backoff=0, max_attempts=1, budget=0.1)
    async with server.client(retry=policy) as koala:
        await koala.track("A", email="a@b.co")
    assert koala.stats().delivered == 1
    assert server.statuses == [429, 200]


async def test_reports_still_queued_at_the_deadline_reach_on_error() -> None:
    server = Server(lambda request, body: httpx.Response(422))
    reported: list[str] = []

    async def slow_on_error(failure: DeliveryFailure) -> None:
        await anyio.sleep(0.02)
        reported.append(failure.ids["email"])

    async with server.client(on_error=slow_on_error, shutdown_timeout=0.05) as koala:
        for i in range(20):
            await koala.track("A", email=f"p{i}@acme.com")
    assert koala.stats().dropped["rejected"] == 20
    assert sorted(reported) == sorted(f"p{i}@acme.com" for i in range(20))


async def test_a_wait_past_the_close_s_deadline_still_waits() -> None:
    """A batch held back by the server's rate while the client closes: past the close's
    deadline its wait was cut to nothing, so its worker spun without yielding until the
    rate let it go, holding the event loop and the close (faults.py's token bucket: closes
    of 12-13 s with a 10 s deadline)."""
    async with KoalaClient("pk_test", base_url="http://127.0.0.1:9", shutdown_timeout=0) as koala:
        sender = koala._engine._sender
        assert sender is not None
        sender.close_by(time.monotonic() - 1)  # the deadline has passed
        ran: list[int] = []

        async def mark() -> None:
            ran.append(1)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(mark)
            await sender._sleep(0.01, 2)
            assert ran, "the wait returned without letting the event loop run"
