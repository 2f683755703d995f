"""KoalaClient's behaviour over httpx.MockTransport: every request is checked against the spec."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from wire_check import check_request, invariant, is_uuid4

from koala_async import (
    ClientClosedError,
    DeliveryFailure,
    KoalaClient,
    RetryPolicy,
    __version__,
    _queue,
    _runtime,
)
from koala_async._queue import Queue

pytestmark = pytest.mark.anyio
PID = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"
PID2 = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"


@dataclass
class Recorder:
    """A MockTransport handler that checks and keeps every request."""

    key: str = "pk_test"
    bodies: list[dict[str, Any]] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    arrived: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(check_request(request, self.key))
        self.requests.append(request)
        self.arrived.set()
        return httpx.Response(200, json={"ok": True})

    def entries(self, kind: str) -> list[dict[str, Any]]:
        return [entry for body in self.bodies for entry in body.get(kind, [])]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def http(recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        yield client


async def test_quickstart_produces_spec_valid_requests(
    recorder: Recorder, http: httpx.AsyncClient
) -> None:
    async with KoalaClient("pk_test", user_agent="acme-app/2.3.0", http_client=http) as koala:
        identify_id = await koala.identify(
            profile_id=PID, email="ada@acme.com", traits={"plan": "pro"}
        )
        track_id = await koala.track("Created Account", profile_id=PID, properties={"seats": 12})
        page_id = await koala.page(
            profile_id=PID, name="Pricing", properties={"url": "https://acme.com/pricing"}
        )
        await koala.account_identify(
            domain="https://www.ACME.com/", traits={"headcount": 100}, group_id="marketing-team"
        )
        await koala.account_track("Workspace Created", domain="acme.com", properties={"id": "42"})
    assert is_uuid4(track_id)
    assert is_uuid4(page_id)
    assert is_uuid4(identify_id)  # identifies are deduplicated by message_id too
    assert {r.headers["user-agent"] for r in recorder.requests} == {
        f"acme-app/2.3.0 koala-async/{__version__}"
    }
    profile = [b for b in recorder.bodies if "profile_id" in b]
    account = [b for b in recorder.bodies if "domain" in b]
    assert len(profile) == len(account) == 1
    assert profile[0]["email"] == "ada@acme.com"
    assert profile[0]["identifies"][0]["traits"] == {"plan": "pro"}
    assert profile[0]["identifies"][0]["message_id"] == identify_id
    assert profile[0]["events"][0]["message_id"] == track_id
    assert profile[0]["events"][0]["event"] == "Created Account"
    assert profile[0]["page_views"][0] == {
        "type": "page",
        "message_id": page_id,
        "name": "Pricing",
        "properties": {"url": "https://acme.com/pricing"},
        "sent_at": profile[0]["page_views"][0]["sent_at"],
    }
    assert account[0]["domain"] == "acme.com"
    assert account[0]["identifies"][0]["traits"] == {"headcount": 100, "group_id": "marketing-team"}
    assert account[0]["events"][0]["properties"] == {"id": "42"}
    invariant(koala.stats())
    assert koala.stats().delivered == 5


async def test_user_agent_without_a_caller_part(
    recorder: Recorder, http: httpx.AsyncClient
) -> None:
    async with KoalaClient("pk_test", http_client=http) as koala:
        await koala.identify(email="ada@acme.com")
    assert recorder.requests[0].headers["user-agent"] == f"koala-async/{__version__}"
    assert recorder.bodies[0] == {
        "email": "ada@acme.com",
        "identifies": [
            {
                "type": "identify",
                "traits": {},
                "message_id": recorder.entries("identifies")[0]["message_id"],
                "sent_at": recorder.entries("identifies")[0]["sent_at"],
            }
        ],
    }


async def test_more_than_30_of_a_kind_become_several_requests_in_order(
    recorder: Recorder, http: httpx.AsyncClient
) -> None:
    async with KoalaClient("pk_test", http_client=http, flush_interval=60) as koala:
        for i in range(95):
            await koala.track("Step", profile_id=PID, properties={"i": i})
        for i in range(31):
            await koala.page(profile_id=PID, properties={"i": i})
        for i in range(40):
            await koala.account_identify(account_id="acct_1", traits={"i": i})
    people = [b for b in recorder.bodies if "profile_id" in b]
    sizes = [(len(b.get("events", [])), len(b.get("page_views", []))) for b in people]
    assert sizes == [(30, 0), (30, 0), (30, 0), (5, 30), (0, 1)]
    assert [e["properties"]["i"] for e in recorder.entries("events")] == list(range(95))
    assert [e["properties"]["i"] for e in recorder.entries("page_views")] == list(range(31))
    accounts = [b for b in recorder.bodies if "account_id" in b]
    assert [len(b["identifies"]) for b in accounts] == [30, 10]
    assert [e["traits"]["i"] for b in accounts for e in b["identifies"]] == list(range(40))


@pytest.mark.parametrize(
    ("before", "file_within"),
    [(29, _runtime.FILE_WITHIN), (63, 3600)],
    ids=["filed-within-50-ms", "filed-at-the-64th-call"],
)
async def test_a_full_batch_is_sent_without_waiting_for_the_interval(
    recorder: Recorder,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    before: int,
    file_within: float,
) -> None:
    """It goes once the filer files it: within FILE_WITHIN, or at the loop's next turn after
    the 64th unfiled entry (FILE_WITHIN an hour: so that is what filed it)."""
    monkeypatch.setattr(_runtime, "FILE_WITHIN", file_within)
    async with KoalaClient("pk_test", http_client=http, flush_interval=3600) as koala:
        for i in range(before):
            await koala.track("Step", profile_id=PID, properties={"i": i})
        await anyio.sleep(0.05)
        assert recorder.bodies == []
        await koala.track("Step", profile_id=PID)
        with anyio.fail_after(5):
            await recorder.arrived.wait()
        assert len(recorder.bodies[0]["events"]) == 30


async def test_an_idle_filer_sleeps_and_a_call_wakes_it(
    recorder: Recorder, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_runtime, "FILE_WITHIN", 0.01)
    async with KoalaClient("pk_test", http_client=http, flush_interval=3600) as koala:
        runtime = koala._engine._runtime
        assert runtime is not None
        with anyio.fail_after(5):
            while not runtime.sleeping:  # noqa: ASYNC110 - a flag, not an event, by design
                await anyio.sleep(0.01)
        await anyio.sleep(0.05)
        assert runtime.sleeping, "no wake-ups while nothing comes"
        for i in range(30):  # a full batch: sent once the first call's nudge has it filed
            await koala.track("Step", profile_id=PID, properties={"i": i})
        with anyio.fail_after(5):
            await recorder.arrived.wait()
        assert len(recorder.bodies[0]["events"]) == 30


async def test_an_idle_ticker_sleeps_and_a_call_wakes_it(
    recorder: Recorder, http: httpx.AsyncClient
) -> None:
    """With nothing queued, in flight or on disk the ticker sleeps (an idle client wakes
    nobody); a call's entry wakes it, and its batch still goes at the flush interval, with
    no flush: only the ticker makes a batch that is not full ready."""
    async with KoalaClient("pk_test", http_client=http, flush_interval=0.1) as koala:
        runtime = koala._engine._runtime
        assert runtime is not None
        for visit in range(2):
            with anyio.fail_after(5):
                while runtime._ticker_sleeps is None:  # noqa: ASYNC110 - a flag, by design
                    await anyio.sleep(0.01)
            await anyio.sleep(0.05)
            assert runtime._ticker_sleeps is not None, "no ticks while nothing is queued"
            recorder.arrived = anyio.Event()
            await koala.track("Step", profile_id=PID, properties={"visit": visit})
            with anyio.fail_after(5):
                await recorder.arrived.wait()
        assert [entry["properties"] for entry in recorder.entries("events")] == [
            {"visit": 0},
            {"visit": 1},
        ]


@pytest.mark.parametrize(
    ("file_within", "flush_interval"), [(0.01, 3600), (3600, 0.02)], ids=["filer", "ticker"]
)
async def test_an_entry_that_cannot_be_filed_is_counted_and_the_rest_delivered(
    recorder: Recorder,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    file_within: float,
    flush_interval: float,
) -> None:
    """A bug in filing (whichever task files: the filer, or the ticker before its tick)
    drops that one entry, counted as rejected, logged and handed to on_error; the
    background goes on."""
    put = _queue.Queue.put

    def broken(self: _queue.Queue, kind: int, entry: bytes, who: Any, ip: Any = None) -> bool:
        if who[1] == "bug@acme.com":
            raise RuntimeError("a bug")
        return put(self, kind, entry, who, ip)

    monkeypatch.setattr(_queue.Queue, "put", broken)
    monkeypatch.setattr(_runtime, "FILE_WITHIN", file_within)
    caplog.set_level(logging.ERROR, logger="koala_async")
    failures: list[DeliveryFailure] = []
    async with KoalaClient(
        "pk_test", http_client=http, flush_interval=flush_interval, on_error=failures.append
    ) as koala:
        await koala.track("Step", email="ada@acme.com")
        await koala.track("Step", email="bug@acme.com")
        await koala.track("Step", email="bob@acme.com")
        with anyio.fail_after(5):
            while not koala.stats().dropped["rejected"]:  # noqa: ASYNC110 - a counter
                await anyio.sleep(0.005)
        await koala.flush(timeout=5)
        stats = koala.stats()
    assert sorted(body["email"] for body in recorder.bodies) == ["ada@acme.com", "bob@acme.com"]
    assert (stats.delivered, stats.dropped["rejected"], stats.pending) == (2, 1, 0)
    assert "unexpected error filing an entry; dropped" in caplog.text
    assert "RuntimeError: a bug" in caplog.text
    [failure] = failures
    assert (failure.reason, failure.kind, failure.ids) == (
        "rejected",
        "profile",
        {"email": "bug@acme.com"},
    )
    assert [entry["event"] for entry in failure.entries] == ["Step"]
    assert isinstance(failure.exception, RuntimeError)


async def test_the_interval_sends_what_is_queued(
    recorder: Recorder, http: httpx.AsyncClient
) -> None:
    async with KoalaClient("pk_test", http_client=http, flush_interval=0.02) as koala:
        await koala.track("Step", email="ada@acme.com")
        with anyio.fail_after(5):
            await recorder.arrived.wait()
        assert koala.stats().delivered == 1


async def test_each_request_is_for_one_person(recorder: Recorder, http: httpx.AsyncClient) -> None:
    async with KoalaClient("pk_test", http_client=http) as koala:
        await koala.track("A", profile_id=PID)
        await koala.track("B", profile_id=PID2)
        await koala.track("C", email="ada@acme.com")
        await koala.track("D", profile_id=PID.upper(), email="ada@acme.com")
        await koala.track("E", profile_id=PID, email="grace@acme.com")
    people = sorted(
        (b.get("profile_id", ""), b.get("email", ""), [e["event"] for e in b["events"]])
        for b in recorder.bodies
    )
    assert people == [
        ("", "ada@acme.com", ["C"]),
        (PID, "ada@acme.com", ["A", "D"]),
        (PID, "grace@acme.com", ["E"]),
        (PID2, "", ["B"]),
    ]


async def test_overrides_of_message_id_and_sent_at(
    recorder: Recorder, http: httpx.AsyncClient
) -> None:
    berlin = timezone(timedelta(hours=2))
    async with KoalaClient("pk_test", http_client=http) as koala:
        assert (
            await koala.track(
                "A",
                email="a@b.co",
                message_id="order-1",
                sent_at=datetime(2024, 5, 1, 14, 0, 0, 123456, berlin),
            )
            == "order-1"
        )
        await koala.track("B", email="a@b.co", sent_at=datetime(2024, 5, 1, 12, 0, 0))
        await koala.track("C", email="a@b.co", sent_at="2024-05-01T12:00:00Z")
        await koala.track("D", email="a@b.co", sent_at="2024-05-01T14:00:00.5+02:00")
        assert await koala.identify(email="a@b.co", message_id="idem-7") == "idem-7"
    events = recorder.entries("events")
    assert [(e["message_id"], e["sent_at"]) for e in events[:1]] == [
        ("order-1", "2024-05-01T12:00:00.123Z")
    ]
    assert [e["sent_at"] for e in events[1:]] == [
        "2024-05-01T12:00:00.000Z",
        "2024-05-01T12:00:00.000Z",
        "2024-05-01T12:00:00.500Z",
    ]
    assert recorder.entries("identifies")[0]["message_id"] == "idem-7"


async def test_sent_at_is_taken_at_the_call(recorder: Recorder, http: httpx.AsyncClient) -> None:
    async with KoalaClient("pk_test", http_client=http, flush_interval=60) as koala:
        before = datetime.now(timezone.utc) - timedelta(milliseconds=1)
        await koala.track("A", email="a@b.co")
        after = datetime.now(timezone.utc)
        await anyio.sleep(0.1)
    sent = datetime.fromisoformat(recorder.entries("events")[0]["sent_at"].replace("Z", "+00:00"))
    assert before <= sent <= after


async def test_changing_properties_after_the_call_changes_nothing(
    recorder: Recorder, http: httpx.AsyncClient
) -> None:
    properties: dict[str, Any] = {"plan": "free", "tags": ["a"]}
    async with KoalaClient("pk_test", http_client=http) as koala:
        await koala.track("A", email="a@b.co", properties=properties)
        properties["plan"] = "pro"
        properties["tags"].append("b")
    assert recorder.entries("events")[0]["properties"] == {"plan": "free", "tags": ["a"]}


async def test_values_msgspec_knows_are_sent_as_json(
    recorder: Recorder, http: httpx.AsyncClient
) -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    async with KoalaClient("pk_test", http_client=http) as koala:
        await koala.track(
            "A", email="a@b.co", properties={"when": when, "n": 1.5, "t": (1, 2), "none": None}
        )
    assert recorder.entries("events")[0]["properties"] == {
        "when": "2024-01-02T03:04:05Z",
        "n": 1.5,
        "t": [1, 2],
        "none": None,
    }


async def test_flush_delivers_what_was_queued_and_says_so(
    recorder: Recorder, http: httpx.AsyncClient
) -> None:
    async with KoalaClient("pk_test", http_client=http, flush_interval=3600) as koala:
        for person in range(5):
            await koala.track("A", email=f"p{person}@acme.com")
        result = await koala.flush()
        assert (result.delivered, result.dropped, result.pending) == (5, 0, 0)
        assert len(recorder.bodies) == 5
        assert (await koala.flush()).delivered == 0
    invariant(koala.stats())


async def test_disabled_client_validates_but_sends_nothing(
    recorder: Recorder, http: httpx.AsyncClient
) -> None:
    koala = KoalaClient("pk_test", http_client=http, enabled=False, strict=True)
    assert is_uuid4(await koala.track("A", email="a@b.co"))
    with pytest.raises(ValueError, match="email must be"):
        await koala.track("A", email="nope")
    async with koala:
        await koala.page(email="a@b.co")
    assert recorder.requests == []
    assert koala.stats().accepted == 0


async def test_a_callers_http_client_is_not_closed(http: httpx.AsyncClient) -> None:
    async with KoalaClient("pk_test", http_client=http) as koala:
        await koala.track("A", email="a@b.co")
    assert not http.is_closed


async def test_its_own_http_clients_are_closed() -> None:
    koala = KoalaClient("pk_test", base_url="http://127.0.0.1:9", shutdown_timeout=0.2)
    async with koala:
        for i in range(3):
            await koala.track("A", email=f"p{i}@acme.com")
        await koala.flush(timeout=0.2)
        assert koala._engine._runtime is not None
        own = list(koala._engine._runtime._made)
    assert own, "senders made their own clients"
    assert all(http.is_closed for http in own)


async def test_calls_after_close_raise_and_the_client_cannot_reopen(
    http: httpx.AsyncClient,
) -> None:
    koala = KoalaClient("pk_test", http_client=http, strict=True)
    async with koala:
        pass
    with pytest.raises(ClientClosedError, match="closed; create a new one"):
        await koala.track("A", email="a@b.co")
    with pytest.raises(ClientClosedError, match="closed"):
        await koala.flush()
    with pytest.raises(ClientClosedError, match="entered once"):
        async with koala:
            pass
    assert (await koala.aclose()).pending == 0


async def test_the_api_key_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    key = "pk_secret_0123456789"

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    caplog.set_level(logging.DEBUG)
    failures: list[DeliveryFailure] = []
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http,
        KoalaClient(
            key,
            http_client=http,
            retry=RetryPolicy(max_attempts=2, backoff=0),
            on_error=failures.append,
        ) as koala,
    ):
        await koala.track("A", email="a@b.co")
        text = repr(koala)
    logging.getLogger("httpx").info("HTTP Request: POST %s", f"https://x/web/projects/{key}/batch")
    stats = koala.stats()
    assert stats.dropped["retries_exhausted"] == 1
    assert failures
    assert key not in text
    assert "pk_s…" in text
    assert stats.last_error is not None
    assert key not in stats.last_error
    assert caplog.records
    assert all(key not in record.getMessage() for record in caplog.records)


async def test_a_client_opened_before_fork_refuses_calls_in_the_child(
    http: httpx.AsyncClient,
) -> None:
    async with KoalaClient("pk_test", http_client=http, strict=True) as koala:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what a call does, and leave at once
            coroutine = koala.track("A", email="a@b.co")
            try:
                coroutine.send(None)
                message = "accepted"
            except ClientClosedError as exc:
                message = str(exc)
            finally:
                coroutine.close()
            os.write(write, message.encode())
            os._exit(0)
        os.close(write)
        _, status = await anyio.to_thread.run_sync(os.waitpid, pid, 0)
        message = os.read(read, 4096).decode()
        os.close(read)
        await koala.track("A", email="a@b.co")  # the parent carries on
    assert status == 0
    assert "opened before os.fork()" in message
    assert "create a new KoalaClient" in message
    assert koala.stats().delivered == 1


async def test_stats_add_up_while_work_is_in_flight(recorder: Recorder) -> None:
    release = anyio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return await recorder(request)

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(slow)) as http,
        KoalaClient("pk_test", http_client=http, flush_interval=0.01) as koala,
    ):
        for i in range(100):
            await koala.track("A", email=f"p{i % 7}@acme.com")
        await anyio.sleep(0.05)
        middle = koala.stats()
        release.set()
    invariant(middle)
    assert middle.pending == 100
    invariant(koala.stats())
    assert koala.stats().delivered == 100


async def test_message_ids_are_drawn_by_the_filer_not_in_a_call(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block of ids costs ~230 µs: drawn in a call, it was 0.2-0.5 µs of every call's
    cost. The filer keeps the pool topped up, so a request handler's calls only pop one."""
    from koala_async import _runtime, _wire

    topping_up = False
    in_calls = in_filer = 0
    top_up, refill = _wire.top_up, _wire._refill

    def watched_top_up() -> None:
        nonlocal topping_up
        topping_up = True
        try:
            top_up()
        finally:
            topping_up = False

    def counted_refill() -> None:
        nonlocal in_calls, in_filer
        if topping_up:
            in_filer += 1
        else:
            in_calls += 1
        refill()

    monkeypatch.setattr(_wire, "_refill", counted_refill)
    monkeypatch.setattr(_runtime, "top_up", watched_top_up)
    async with KoalaClient("pk_test", http_client=http, flush_interval=3600) as koala:
        await koala.track("Viewed", email="warm@acme.com")
        await anyio.sleep(0.1)  # the filer's first period: the pool is topped up
        in_calls = 0
        for i in range(5000):  # five blocks' worth, a request handler's way
            await koala.track("Viewed", email=f"user{i % 50}@acme.com")
            if i % 5 == 4:
                await anyio.lowlevel.checkpoint()
        assert in_calls == 0
        assert in_filer >= 4


async def test_calls_yield_to_the_event_loop_only_when_it_has_not_run(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from koala_async import _loop

    yields = 0
    primitives = type(_loop.current())
    checkpoint = primitives.checkpoint

    async def counted(self: _loop.Loop) -> None:
        nonlocal yields
        yields += 1
        await checkpoint(self)

    monkeypatch.setattr(primitives, "checkpoint", counted)
    async with KoalaClient("pk_test", http_client=http, flush_interval=3600) as koala:
        for i in range(640):  # a request handler: back to the event loop every few calls
            await koala.track("Viewed", email=f"user{i}@acme.com")
            if i % 5 == 4:
                await anyio.lowlevel.checkpoint()
        assert yields == 0, "a caller that returns to the loop pays no yields"
        for i in range(640):  # a bare loop: the senders get a turn at least every 128 calls
            await koala.track("Viewed", email=f"user{i}@acme.com")
        # At 64 unfiled entries the filer is asked to run at the next turn; at 128 it has not
        # (no turn came), so the call yields: about once per 128 calls, more if the filer's
        # turn comes late (on trio, perhaps only at the next yield).
        assert 4 <= yields <= 9
    assert koala.stats().delivered == 1280


async def test_a_worker_woken_for_a_ready_person_mostly_finds_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dispatch wakes one idle worker per ready target that no worker woken before, nor
    the worker dispatching, will take: one person's lanes (a target ready again as soon as
    it is taken) would otherwise wake about one worker in two for nothing. Some still are:
    a worker already running may take the target first, which costs less than leaving it
    to the one woken (it would then need waking itself)."""

    async def reply(request: httpx.Request) -> httpx.Response:
        await anyio.lowlevel.checkpoint()
        return httpx.Response(200)

    http = httpx.AsyncClient(transport=httpx.MockTransport(reply))
    woken: set[object] = set()  # tasks woken by a dispatch, until they look for a target
    found: list[bool] = []
    async with KoalaClient("pk_test", http_client=http, max_concurrent_requests=16) as koala:
        runtime = koala._engine._runtime
        assert runtime is not None
        wakened, take = runtime._wakened, Queue.take

        def watch_wake(flag: Any) -> None:
            if flag in runtime._waking:
                woken.add(anyio.get_current_task().id)
            wakened(flag)

        def watch_take(queue: Queue) -> Any:
            target = take(queue)
            me = anyio.get_current_task().id
            if me in woken:
                woken.discard(me)
                found.append(target is not None)
            return target

        runtime._wakened = watch_wake  # type: ignore[method-assign]
        monkeypatch.setattr(Queue, "take", watch_take)
        for i in range(3000):
            await koala.track("Step", profile_id=PID, properties={"i": i})
            if i % 30 == 29:
                await anyio.lowlevel.checkpoint()
        await koala.flush(timeout=10)
        assert koala.stats().delivered == 3000
    assert found, "idle workers were woken"
    assert found.count(False) < 0.4 * len(found), f"{found.count(False)} of {len(found)} found none"
