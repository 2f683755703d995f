"""KoalaSyncClient: the async client's behaviour from plain threads, and the traps of threads.

In-process tests plug a FakeCollector in memory (its transport runs on the client's own
delivery thread); the fork and exit tests run scripts in processes of their own against
``koala-async collector``.
"""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from sync_support import ROOT, collector, message_ids

from koala_async import (
    ClientClosedError,
    DeliveryFailure,
    FlushResult,
    KoalaClient,
    KoalaSyncClient,
    QueueFullError,
    Stats,
    ValidationError,
    _runtime,
)
from koala_async.testing import FakeCollector, Reply

PROFILE = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"


def fake_client(fake: FakeCollector, **options: Any) -> KoalaSyncClient:
    http = httpx.AsyncClient(transport=fake.transport())
    return KoalaSyncClient("pk_test", http_client=http, **options)


def balanced(stats: Stats) -> bool:
    return stats.accepted == stats.delivered + stats.dropped_total + stats.pending


# The same calls, errors and return values as KoalaClient

BAD_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("track", ("Signed Up",), {}),
    ("track", ("",), {"email": "ada@acme.com"}),
    ("track", ("Signed Up",), {"profile_id": "not-a-uuid"}),
    ("track", ("Signed Up",), {"email": "ada"}),
    ("track", ("Signed Up",), {"email": "ada@acme.com", "properties": {"x": float("nan")}}),
    ("track", ("Signed Up",), {"email": "ada@acme.com", "properties": {"x": object()}}),
    ("track", ("Signed Up",), {"email": "ada@acme.com", "message_id": ""}),
    ("track", ("Signed Up",), {"email": "ada@acme.com", "sent_at": "yesterday"}),
    ("identify", (), {"email": "ada@acme.com", "traits": [1]}),
    ("page", (), {"profile_id": PROFILE, "name": ""}),
    ("account_identify", (), {"domain": "not a domain"}),
    ("account_identify", (), {"domain": "acme.com", "group_id": "a", "traits": {"group_id": "b"}}),
    ("account_track", ("Created",), {}),
]


def async_error(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    async def call() -> str:
        koala = KoalaClient("pk_test", enabled=False, strict=True)
        try:
            await getattr(koala, name)(*args, **kwargs)
        except ValidationError as exc:
            return str(exc)
        return "no error"

    return asyncio.run(call())


@pytest.mark.parametrize(("name", "args", "kwargs"), BAD_CALLS)
def test_bad_input_raises_what_the_async_client_raises(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    koala = KoalaSyncClient("pk_test", enabled=False, strict=True)
    with pytest.raises(ValidationError) as raised:
        getattr(koala, name)(*args, **kwargs)
    assert str(raised.value) == async_error(name, args, kwargs)


def test_options_are_checked_when_the_client_is_made() -> None:
    with pytest.raises(ValidationError, match="on_full"):
        KoalaSyncClient("pk_test", on_full="sometimes")  # type: ignore[arg-type]


def test_every_call_is_delivered_as_the_async_client_sends_it() -> None:
    fake = FakeCollector()
    with fake_client(fake, user_agent="acme-sync/1.0") as koala:
        ids = [
            koala.track("Signed Up", profile_id=PROFILE, email="ada@acme.com", message_id="m1"),
            koala.identify(profile_id=PROFILE, traits={"plan": "pro"}),
            koala.page(profile_id=PROFILE, name="Pricing", properties={"url": "/pricing"}),
            koala.account_identify(domain="https://www.Acme.com", group_id="marketing"),
            koala.account_track("Workspace Created", account_id="42"),
        ]
        assert ids[0] == "m1"
    assert fake.violations == []
    assert fake.message_ids() == {message_id: 1 for message_id in ids}
    assert [e.event for e in fake.events] == ["Signed Up"]
    assert fake.events[0].email == "ada@acme.com"
    assert [e.traits for e in fake.accounts if e.type == "identify"] == [{"group_id": "marketing"}]
    assert {e.domain for e in fake.accounts} == {"acme.com", None}
    assert "acme-sync/1.0 koala-async/" in fake.requests[0].headers["user-agent"]
    stats = koala.stats()
    assert (stats.accepted, stats.delivered, stats.pending) == (5, 5, 0)


@pytest.mark.parametrize(
    ("file_within", "calls"),
    [(3600, 64), (0.01, 30)],
    ids=["filed-at-the-64th-call", "a-sleeping-filer-woken"],
)
def test_entries_are_filed_without_waiting_for_the_filers_period(
    monkeypatch: pytest.MonkeyPatch, file_within: float, calls: int
) -> None:
    """At the 64th unfiled entry (the period an hour), or at the first one the filer hears
    of after it went to sleep (nothing came for a period): a full batch goes at once."""
    monkeypatch.setattr(_runtime, "FILE_WITHIN", file_within)
    fake = FakeCollector()
    with fake_client(fake, flush_interval=3600) as koala:
        koala.track("Warm", email="ada@acme.com")  # starts the client's engine
        koala.flush()
        time.sleep(0.1)  # a period without calls: a filer that sleeps when idle is asleep
        for i in range(calls):
            koala.track("Step", profile_id=PROFILE, message_id=f"m{i:02d}")
        deadline = time.monotonic() + 10
        while len(fake.events) < 31 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert [e.message_id for e in fake.events[1:31]] == [f"m{i:02d}" for i in range(30)]


# Threads


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts the message ids of every request and answers 200: FakeCollector's spec checks
    cost more than the client under test, and those are covered above."""

    def __init__(self) -> None:
        self.ids: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = msgspec.json.decode(await request.aread())
        for kind in ("events", "identifies", "page_views"):
            self.ids.update(entry["message_id"] for entry in body.get(kind, ()))
        return httpx.Response(200, json={"ok": True})


def test_sixteen_threads_deliver_every_id_exactly_once() -> None:
    sink = CountingTransport()
    http = httpx.AsyncClient(transport=sink)
    koala = KoalaSyncClient("pk_test", http_client=http, max_queue_size=1_000_000)
    ids: list[list[str | None]] = [[] for _ in range(16)]
    snapshots: list[Stats] = []
    running = True

    def calls(thread: int) -> None:
        # The three kinds in turn: a request carries up to 30 of each, so a third as many
        # requests (each costs far more CPU than a call) for as many calls.
        add = ids[thread].append
        for i in range(10_000):
            email = f"t{thread}-u{i % 7}@acme.com"
            if i % 3 == 0:
                add(koala.track("Clicked", email=email, properties={"i": i}))
            elif i % 3 == 1:
                add(koala.identify(email=email, traits={"i": i}))
            else:
                add(koala.page(email=email, properties={"i": i}))

    def sample() -> None:  # stats() from yet another thread, while calls run
        while running:
            snapshots.append(koala.stats())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=calls, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    running = False
    sampler.join()
    koala.close(timeout=60)
    every = [message_id for chunk in ids for message_id in chunk]
    assert len(set(every)) == 160_000
    assert sink.ids == dict.fromkeys(every, 1)
    stats = koala.stats()
    assert (stats.accepted, stats.delivered, stats.pending) == (160_000, 160_000, 0)
    assert snapshots
    assert all(balanced(s) for s in snapshots)
    assert [s.accepted for s in snapshots] == sorted(s.accepted for s in snapshots)


# Blocking calls are bounded, and never wait on themselves


def stalled(fake: FakeCollector) -> None:
    fake.responder = lambda received: Reply(delay=60)


def test_close_blocks_at_most_its_timeout_and_counts_what_it_gave_up() -> None:
    fake = FakeCollector()
    stalled(fake)
    koala = fake_client(fake, retry=None)
    for i in range(40):
        koala.track("Clicked", email=f"u{i}@acme.com")
    result = koala.close(timeout=0.5)
    assert result.delivered == 0
    assert result.dropped + result.pending == 40


def test_flush_blocks_at_most_its_timeout() -> None:
    fake = FakeCollector()
    stalled(fake)
    koala = fake_client(fake)
    koala.track("Clicked", email="ada@acme.com")
    result = koala.flush(timeout=0.3)
    assert result == FlushResult(delivered=0, dropped=0, pending=1)
    fake.responder = None
    koala.close(timeout=0.1)


@pytest.mark.timeout(30)  # a flush that waited on its own thread would never return
def test_flush_and_calls_from_the_delivery_thread_do_not_deadlock() -> None:
    fake = FakeCollector()
    seen: list[tuple[str | None, FlushResult]] = []

    def on_error(failure: DeliveryFailure) -> None:
        assert threading.current_thread().name == "koala-async"  # the delivery thread
        seen.append((koala.track("Failed", email="ops@acme.com"), koala.flush(timeout=math.inf)))

    koala = fake_client(fake, on_error=on_error)
    fake.fail_next(status=400)
    koala.track("Clicked", email="ada@acme.com")
    koala.flush(timeout=10)
    result = koala.close(timeout=10)
    assert len(seen) == 1
    message_id, flushed = seen[0]
    assert flushed.pending >= 0
    assert fake.message_ids() == {message_id: 1}
    assert result.pending == 0


def test_a_full_queue_raises_drops_or_waits_in_the_callers_thread() -> None:
    fake = FakeCollector()
    stalled(fake)
    raising = fake_client(fake, max_queue_size=2, on_full="raise")
    raising.track("A", email="a@acme.com")
    raising.track("B", email="b@acme.com")
    with pytest.raises(QueueFullError):
        raising.track("C", email="c@acme.com")
    dropping = fake_client(fake, max_queue_size=2, on_full="drop")
    for name in "ABC":
        dropping.track(name, email=f"{name.lower()}@acme.com")
    stats = dropping.stats()
    assert (stats.accepted, stats.dropped["queue_full"], stats.pending) == (3, 1, 2)
    assert balanced(stats)
    pacing = fake_client(fake, max_queue_size=2)  # on_full="pace": a bounded wait, then a drop
    for name in "ABC":
        pacing.track(name, email=f"{name.lower()}@acme.com")
    raising.close(timeout=0.1)
    dropping.close(timeout=0.1)
    pacing.close(timeout=0.1)
    assert pacing.stats().dropped["queue_full"] == 1


# Lifecycle


def test_flush_and_close_may_wait_as_long_as_delivery_takes() -> None:
    fake = FakeCollector()
    koala = fake_client(fake)
    koala.track("Clicked", email="ada@acme.com")
    assert koala.flush(timeout=math.inf) == FlushResult(delivered=1, dropped=0, pending=0)
    koala.track("Clicked", email="ada@acme.com")
    assert koala.close(timeout=math.inf) == FlushResult(delivered=1, dropped=0, pending=0)


def test_a_closed_client_refuses_calls_and_cannot_be_reentered() -> None:
    fake = FakeCollector()
    with fake_client(fake, strict=True) as koala:
        koala.track("Clicked", email="ada@acme.com")
    with pytest.raises(ClientClosedError, match="create a new one"):
        koala.track("Clicked", email="ada@acme.com")
    with pytest.raises(ClientClosedError):
        koala.flush()
    with pytest.raises(ClientClosedError), koala:
        pass
    assert koala.close() == FlushResult(delivered=0, dropped=0, pending=0)  # twice: harmless
    assert koala.stats().delivered == 1
    assert "closed" in repr(koala)
    assert "pk_test" not in repr(koala)


def test_a_disabled_client_validates_and_starts_no_thread() -> None:
    koala = KoalaSyncClient("pk_test", enabled=False)
    before = threading.active_count()
    assert koala.track("Clicked", email="ada@acme.com", message_id="m1") == "m1"
    assert threading.active_count() == before
    assert koala.stats().accepted == 0
    assert koala.flush() == FlushResult(delivered=0, dropped=0, pending=0)


def test_no_thread_starts_before_the_first_call() -> None:
    fake = FakeCollector()
    # New threads, not a count: an earlier test's delivery thread may still be ending.
    before = set(threading.enumerate())
    koala = fake_client(fake)
    assert set(threading.enumerate()) - before == set()
    assert koala.stats().accepted == 0
    koala.track("Clicked", email="ada@acme.com")
    assert [t.name for t in set(threading.enumerate()) - before] == ["koala-async"]
    koala.close()
    assert fake.message_ids().total() == 1


# Processes: fork, and interpreter exit


def run_script(source: str, base_url: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source), base_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


FORK = """
    import os, sys
    from koala_async import KoalaSyncClient

    koala = KoalaSyncClient("pk_test", base_url=sys.argv[1], flush_interval=3600)
    print(koala.track("Before Fork", email="parent@acme.com"), flush=True)  # thread started
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread is gone; a call starts a new one
        for i in range(100):
            print(koala.track("In Child", email=f"child{i % 3}@acme.com"), flush=True)
        assert koala.stats().accepted == 100, koala.stats()
        sys.exit(0)  # no close(): atexit delivers
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
    print(koala.track("After Fork", email="parent@acme.com"), flush=True)
    assert koala.stats().accepted == 2, koala.stats()
"""


def test_a_forked_child_starts_its_own_delivery_and_loses_nothing(tmp_path: Path) -> None:
    with collector(tmp_path) as (base_url, log):
        done = run_script(FORK, base_url)
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    assert len(ids) == 102
    assert message_ids(log) == dict.fromkeys(ids, 1)


EXIT_WITHOUT_CLOSING = """
    import sys
    from koala_async import KoalaSyncClient

    koala = KoalaSyncClient(
        "pk_test", base_url=sys.argv[1], flush_interval=3600, shutdown_timeout=float(sys.argv[2])
    )
    for i in range(50):
        print(koala.track("Ran", email=f"script{i % 5}@acme.com"), flush=True)
"""


def test_a_script_that_never_closes_is_delivered_at_exit(tmp_path: Path) -> None:
    with collector(tmp_path) as (base_url, log):
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(EXIT_WITHOUT_CLOSING), base_url, "10"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert message_ids(log) == dict.fromkeys(done.stdout.split(), 1)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers: an outage that hangs rather than refuses."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    for connection in accepted:
        connection.close()


def test_exit_never_hangs_on_an_endpoint_that_never_answers(silent_server: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EXIT_WITHOUT_CLOSING), silent_server, "1"],
        capture_output=True,
        text=True,
        timeout=30,  # shutdown_timeout is 1 s: a hang fails here
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "50 entries were not delivered within the shutdown deadline" in done.stderr


def test_a_sync_client_keeps_its_entries_in_a_spool(tmp_path: Path) -> None:
    """The sync client takes every option the async one does (ClientOptions), the spool too:
    what it could not deliver waits on disk, and the next client on that file sends it."""
    path = tmp_path / "spool.db"
    down = KoalaSyncClient(
        "pk_test", base_url="http://127.0.0.1:9", spool=path, shutdown_timeout=0.5
    )
    ids = [down.track("Signed Up", email=f"u{i}@acme.com") for i in range(5)]
    closed = down.close()
    # close() returns at its deadline; the spool's last commit may come a moment later
    # (a loaded machine): until then its entries are pending in memory, still the engine's.
    stats = down.stats()
    for _ in range(200):
        if stats.spooled == 5:
            break
        time.sleep(0.05)
        stats = down.stats()
    assert (closed.delivered, closed.pending) == (0, 5), closed  # pending: spooled included
    assert (stats.spooled, stats.pending) == (5, 5), stats  # pending: spooled included
    fake = FakeCollector()
    up = fake_client(fake, spool=path)
    ids.append(up.track("Signed Up", email="later@acme.com"))
    assert up.close(10).delivered == 6
    assert set(fake.message_ids()) == set(ids)
