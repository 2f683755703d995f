"""The durable spool against a real HTTP server on 127.0.0.1 that each test starts and stops.

An outage for a whole run, a kill -9, a flood ten times the memory queue, the caps, two owners
and foreign files; the stats invariant after each, and each person's entries in order.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import anyio
import pytest
from wire_check import free_port, invariant

from koala_async import KoalaClient, KoalaSyncClient, RetryPolicy, SpoolError, Stats, _spool
from koala_async._ledger import Ledger
from koala_async._queue import EVENTS, FILE_EVERY, Batch, new_seqs
from koala_async._reporter import Reporter
from koala_async._spool import Spool, SpooledQueue, SpoolOptions, Writer, inspect
from koala_async.testing import FakeCollector

pytestmark = pytest.mark.anyio
FAST = RetryPolicy(backoff=0.02, max_backoff=0.1, max_attempts=20)
TICK = 0.02  # spool_commit_interval in tests


def client(base_url: str, path: Path, **options: object) -> KoalaClient:
    given: dict[str, object] = {
        "spool_commit_interval": TICK,
        "retry": FAST,
        "flush_interval": 0.05,
        **options,
    }
    return KoalaClient("pk_test", base_url=base_url, spool=path, **given)  # type: ignore[arg-type]


async def produce(koala: KoalaClient, count: int, people: int = 7, start: int = 0) -> list[str]:
    """``count`` events spread over ``people`` people, with message_ids that say their order."""
    ids = []
    for i in range(start, start + count):
        mid = await koala.track("Step", email=f"p{i % people}@acme.com", message_id=f"m-{i:05d}")
        assert mid is not None, "accepted"
        ids.append(mid)
    return ids


async def wait_settled(koala: KoalaClient) -> None:
    with anyio.fail_after(30):
        while koala.stats().pending:  # noqa: ASYNC110 - what a user of stats() would do
            await anyio.sleep(0.02)


def in_order(fake: FakeCollector) -> None:
    """Each person's entries arrived as the ordering rule says (identifies in the order
    they were made, after what was made before them: docs/decisions.md)."""
    assert fake.order_problems() == []


def once(fake: FakeCollector, ids: list[str]) -> None:
    assert fake.message_ids() == Counter(dict.fromkeys(ids, 1))
    assert fake.violations == []


def down_url() -> tuple[str, int]:
    port = free_port()
    return f"http://127.0.0.1:{port}", port


async def test_endpoint_down_for_a_whole_run_then_a_second_client_delivers_all(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    url, port = down_url()
    async with client(url, path, max_queue_size=50, shutdown_timeout=0.2) as koala:
        ids = await produce(koala, 300)
    result = await koala.aclose()
    stats = koala.stats()
    invariant(stats)
    assert stats.delivered == 0
    assert stats.dropped_total == 0  # neither queue_full nor shutdown_timeout: all on disk
    assert stats.spooled == stats.pending == 300
    assert result.spooled == 300

    fake = FakeCollector()
    async with fake.serve(port=port), client(url, path) as again:
        assert again.stats().recovered == 300
        await wait_settled(again)
    stats = again.stats()
    invariant(stats)
    assert (stats.accepted, stats.delivered, stats.recovered, stats.spooled) == (300, 300, 300, 0)
    once(fake, ids)
    in_order(fake)
    assert inspect(str(path)).entries == 0  # delivered, so deleted


async def test_the_visitors_ip_survives_the_spool(tmp_path: Path) -> None:
    """Entries in memory and entries parked on disk alike come back with their ip, and a
    person's entries with different ips still go in different requests."""
    path = tmp_path / "spool.db"
    url, port = down_url()
    async with client(url, path, max_queue_size=2, shutdown_timeout=0.2) as koala:
        for i in range(6):  # 2 fit in memory; 4 are parked on disk only
            await koala.track("Step", email="ada@acme.com", ip=f"203.0.113.{i % 2 + 1}")
    assert koala.stats().spooled == 6
    fake = FakeCollector()
    async with fake.serve(port=port), client(url, path) as again:
        await wait_settled(again)
    sent = Counter(
        (received.body.get("ip"), len(received.body["events"])) for received in fake.requests
    )
    assert sum(count * n for (_, n), count in sent.items()) == 6
    assert {ip for ip, _ in sent} == {"203.0.113.1", "203.0.113.2"}


async def test_ten_times_the_memory_queue_during_an_outage(tmp_path: Path) -> None:
    url, port = down_url()
    async with client(url, tmp_path / "spool.db", max_queue_size=100) as koala:
        ids = []
        for chunk in range(10):
            ids += await produce(koala, 100, start=chunk * 100)
            stats = koala.stats()
            assert stats.pending - stats.spooled <= 100  # memory stays bounded
            invariant(stats)
        assert koala.stats().dropped_total == 0
        fake = FakeCollector()
        async with fake.serve(port=port):
            await wait_settled(koala)
    stats = koala.stats()
    invariant(stats)
    assert (stats.delivered, stats.spooled, stats.dropped_total) == (1000, 0, 0)
    once(fake, ids)
    in_order(fake)


async def test_new_entries_wait_behind_recovered_ones(tmp_path: Path) -> None:
    """Replay first: a person's entries of the last run arrive before those of this one."""
    path = tmp_path / "spool.db"
    url, port = down_url()
    async with client(url, path, shutdown_timeout=0.1) as koala:
        ids = await produce(koala, 60, people=3)
    fake = FakeCollector()
    async with fake.serve(port=port), client(url, path) as again:
        ids += await produce(again, 60, people=3, start=60)
        await wait_settled(again)
    invariant(again.stats())
    once(fake, ids)
    in_order(fake)


async def test_batches_out_of_retries_wait_on_disk_and_keep_their_order(tmp_path: Path) -> None:
    fake = FakeCollector()
    fake.fail_next(6, status=500)  # two attempts each: three batches run out
    policy = RetryPolicy(backoff=0, max_attempts=2)
    async with fake.serve() as url:
        koala = KoalaClient(
            "pk_test", base_url=url, spool=tmp_path / "s.db", spool_commit_interval=TICK,
            retry=policy, flush_interval=0.05,
        )  # fmt: skip
        async with koala:
            ids = await produce(koala, 200, people=3)
            await wait_settled(koala)
    stats = koala.stats()
    invariant(stats)
    assert stats.dropped["retries_exhausted"] == 0
    assert stats.delivered == 200
    once(fake, ids)
    in_order(fake)


async def test_refused_batches_leave_the_spool(tmp_path: Path) -> None:
    """400 and 413 cannot be fixed by retrying: dropped and deleted, not replayed."""
    path = tmp_path / "spool.db"
    fake = FakeCollector()
    fake.fail_next(1, status=400)
    async with fake.serve() as url:
        async with client(url, path) as koala:
            await produce(koala, 10, people=1)  # one batch
            await wait_settled(koala)
        async with client(url, path) as again:
            pass
    assert koala.stats().dropped["rejected"] == 10
    invariant(koala.stats())
    assert again.stats().recovered == 0


async def test_a_dead_endpoint_empties_nothing(tmp_path: Path) -> None:
    """A refused key drops nothing with a spool: the next client, with the right key, sends all."""
    path = tmp_path / "spool.db"
    fake = FakeCollector()
    fake.fail_next(1000, status=401)
    async with fake.serve() as url:
        async with client(url, path, shutdown_timeout=0.5) as koala:
            ids = await produce(koala, 100)
            with anyio.fail_after(10):
                while koala.stats().circuit != "dead":  # noqa: ASYNC110 - as a user would
                    await anyio.sleep(0.02)
            ids += await produce(koala, 20, start=100)  # later calls too
        stats = koala.stats()
        invariant(stats)
        assert (stats.dropped_total, stats.spooled) == (0, 120)
        fake.reset()
        async with client(url, path) as again:
            await wait_settled(again)
    invariant(again.stats())
    once(fake, ids)
    in_order(fake)


async def test_the_size_cap_drops_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    url, port = down_url()
    padding = "x" * 1000
    async with client(
        url, path, max_queue_size=20, shutdown_timeout=0.1, spool_max_bytes=65536
    ) as koala:
        ids: list[str] = []
        for i in range(300):
            mid = await koala.track(
                "Big", email="a@acme.com", properties={"pad": padding}, message_id=f"m-{i:05d}"
            )
            assert mid is not None, "accepted"
            ids.append(mid)
    stats = koala.stats()
    invariant(stats)
    full = stats.dropped["spool_full"]
    assert full > 0
    assert full + stats.spooled == 300
    fake = FakeCollector()
    async with fake.serve(port=port), client(url, path) as again:
        await wait_settled(again)
    invariant(again.stats())
    # The oldest waiting on disk were dropped; the 20 in memory were on their way, exempt.
    once(fake, ids[:20] + ids[20 + full :])


@pytest.mark.parametrize(
    ("cap", "log"), [(1 << 30, 32 << 20), (16 << 20, 16 << 20), (65536, 1000 * 8192)]
)
def test_the_write_ahead_log_is_bounded_by_the_spools_cap(cap: int, log: int) -> None:
    """Beside the file, the log grows to 32 MiB between checkpoints, but a spool capped
    lower keeps it within its cap (SQLite's default of 1,000 pages at least)."""
    assert _spool.wal_bytes(cap, 8192) == log


async def test_a_client_bounds_its_spools_write_ahead_log(tmp_path: Path) -> None:
    url, _ = down_url()
    async with client(url, tmp_path / "spool.db", spool_max_bytes=16 << 20):
        pass
    writer = _spool.Writer(str(tmp_path / "spool.db"), max_bytes=16 << 20)
    try:
        await writer.open()
        file = writer.file
        assert file is not None

        def pragmas() -> list[int]:  # asked in the writer's thread, as the client's are
            db = file._db
            return [
                db.execute(f"PRAGMA {p}").fetchone()[0]
                for p in ("journal_size_limit", "wal_autocheckpoint")
            ]

        assert await writer.run(pragmas) == [16 << 20, (16 << 20) // 8192]
    finally:
        writer.stop()
        writer.join(10)


async def test_entries_older_than_max_age_expire(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    url, _ = down_url()
    async with client(url, path, max_queue_size=10, shutdown_timeout=0.1) as koala:
        await produce(koala, 50)
    assert koala.stats().spooled == 50
    await anyio.sleep(0.3)
    # Opened again with a shorter max age: the next commit finds them all too old.
    async with client(url, path, spool_max_age=0.2, shutdown_timeout=0.1) as again:
        with anyio.fail_after(10):
            while again.stats().spooled:  # noqa: ASYNC110 - what a user of stats() would do
                await anyio.sleep(0.02)
    stats = again.stats()
    invariant(stats)
    assert stats.dropped["expired"] == 50
    assert (stats.recovered, stats.delivered, stats.pending) == (50, 0, 0)


async def test_two_owners(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    url, _ = down_url()
    async with client(url, path, shutdown_timeout=0):
        second = client(url, path)
        with pytest.raises(SpoolError, match=f"in use by process {os.getpid()}"):
            await second.__aenter__()
        invariant(second.stats())
    async with client(url, path, shutdown_timeout=0):
        pass  # free again once the owner closed


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"hello, not a database" * 100, id="garbage"),
        pytest.param(None, id="foreign"),
        pytest.param(b"SQLite format 3\x00" + b"\xff" * 4000, id="corrupt-header"),
    ],
)
async def test_a_corrupt_or_foreign_file_is_refused_untouched(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "spool.db"
    if content is None:
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE notes (body TEXT)")
            db.execute("INSERT INTO notes VALUES ('mine')")
        db.close()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    url, _ = down_url()
    koala = client(url, path)
    with pytest.raises(SpoolError, match="not a koala-async spool") as caught:
        await koala.__aenter__()
    assert str(path) in str(caught.value)
    assert path.read_bytes() == before
    invariant(koala.stats())


def test_halves_carry_their_entries_seqs() -> None:
    batch = Batch()
    batch.seqs = seqs = new_seqs()
    for seq, kind in enumerate([0, 1, 0, 2, 0, 1], 1):
        batch.append(kind, b'{"n":%d}' % seq)
        seqs[kind].append(seq)
    for half in batch.halves():
        assert half.seqs is not None
        for kind, raw in half.entries():
            assert int(raw[5:-1]) in half.seqs[kind]
        assert sum(map(len, half.seqs)) == half.size


async def test_a_batch_out_of_retries_takes_its_persons_unfiled_entries_to_disk(
    tmp_path: Path,
) -> None:
    """Entries a call made but the filer has not filed yet are the person's later entries
    too: they follow the batch to disk, or they would be sent before it."""
    path = tmp_path / "s.db"
    writer = Writer(str(path))
    await writer.open()
    queue, ledger = SpooledQueue(0), Ledger()
    options = SpoolOptions.build(path, TICK, 1 << 30, 3600)
    spool = Spool(
        options, writer, queue, ledger, Reporter(None), 100, lambda on: None, lambda ready: None
    )
    ada = ("email", "ada@acme.com", "email", None)
    ledger.accept()
    queue.put(EVENTS, b'"1"', ada)
    target = queue.targets["email"]["ada@acme.com"]
    batch = target.seal()
    assert batch is not None
    for raw in (b'"2"', b'"3"'):
        ledger.accept()
        queue.add(EVENTS, raw, ada)
    assert spool.settled(target, batch, "retries_exhausted")
    assert queue.inbox == []
    assert [row.raw for row in queue.rows] == [b'"1"', b'"2"', b'"3"']
    assert spool._parks == [row.seq for row in queue.rows]  # all three wait on disk, in order
    assert (ledger.pending, ledger.spooled) == (0, 3)
    writer.stop()
    assert writer.join(10)


async def test_a_row_settled_before_its_commit_is_never_written(tmp_path: Path) -> None:
    """Deletions of rows not yet written cancel those rows (the first of them included);
    deletions of rows written earlier go to the commit."""
    path = tmp_path / "s.db"
    writer = Writer(str(path))
    await writer.open()
    queue = SpooledQueue(0)
    options = SpoolOptions.build(path, TICK, 1 << 30, 3600)
    spool = Spool(
        options, writer, queue, Ledger(), Reporter(None), 100, lambda on: None, lambda r: None
    )
    ada = ("email", "ada@acme.com", "email", None)
    for raw in (b'"1"', b'"2"', b'"3"'):
        queue.put(EVENTS, raw, ada)
    spool._take()  # 1-3 written
    for raw in (b'"4"', b'"5"'):
        queue.put(EVENTS, raw, ada)
    spool._deletes = [2, 4]
    writes, deletes, parks = spool._take()
    assert ([row.seq for row in writes], deletes, parks) == ([5], [2], [])
    writer.stop()
    assert writer.join(10)


_CHILD = """
import sys, anyio
from koala_async import KoalaClient

async def main(path, url):
    async with KoalaClient("pk_test", base_url=url, spool=path, spool_commit_interval=0.02,
                           max_queue_size=50) as koala:
        spool = koala._engine._spool
        i = 0
        while True:
            for _ in range(50):
                await koala.track("Step", email=f"p{i % 5}@acme.com", message_id=f"m-{i:06d}")
                i += 1
            commits = spool.commits
            while spool.commits < commits + 2:  # everything made so far is on disk now
                await anyio.sleep(0.005)
            print(i, flush=True)

anyio.run(main, sys.argv[1], sys.argv[2], backend=sys.argv[3])
"""


async def test_kill_9_mid_stream_loses_only_the_last_commit_window(
    tmp_path: Path, anyio_backend: str
) -> None:
    path = tmp_path / "spool.db"
    url, port = down_url()
    with subprocess.Popen(  # noqa: ASYNC220 - nothing else runs yet; the reads wait for the child
        [sys.executable, "-c", textwrap.dedent(_CHILD), str(path), url, anyio_backend],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            for _ in range(4):
                durable = int(child.stdout.readline())
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    fake = FakeCollector()
    async with fake.serve(port=port), client(url, path) as again:  # the dead owner's lock: ours
        await wait_settled(again)
    stats = again.stats()
    invariant(stats)
    received = sorted(fake.message_ids())
    assert received[:durable] == [f"m-{i:06d}" for i in range(durable)]
    assert received == [f"m-{i:06d}" for i in range(len(received))]  # a prefix: nothing skipped
    assert stats.delivered == stats.recovered == len(received)
    in_order(fake)


def test_stats_defaults_without_a_spool() -> None:
    stats = KoalaClient("pk_test").stats()
    assert isinstance(stats, Stats)
    assert (stats.spooled, stats.recovered) == (0, 0)


async def test_the_docs_adopt_dead_workers_spools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = (Path(__file__).parents[2] / "docs" / "how-to" / "spool.md").read_text()
    (block,) = re.findall(r"```python\n([^`]*async def adopt_dead_workers.*?)```", page, re.S)
    namespace: dict[str, object] = {"KoalaClient": KoalaClient, "SpoolError": SpoolError}
    exec(textwrap.dedent(block), namespace)
    adopt = namespace["adopt_dead_workers_spools"]
    url, port = down_url()
    dead = tmp_path / "koala-101.db"
    async with client(url, dead, shutdown_timeout=0.1) as koala:  # a worker that is gone
        ids = await produce(koala, 40)
    monkeypatch.setenv("KOALA_PUBLIC_API_KEY", "pk_test")
    monkeypatch.setenv("KOALA_BASE_URL", url)
    fake = FakeCollector()
    async with (
        fake.serve(port=port),
        client(url, tmp_path / "koala-102.db") as live,  # a live worker's: left alone
        client(url, tmp_path / "koala-103.db"),  # this worker's own
    ):
        await produce(live, 5, start=1000)
        await adopt(tmp_path, tmp_path / "koala-103.db")  # type: ignore[operator]
        received = fake.message_ids()
    assert [received[i] for i in ids] == [1] * len(ids)  # the live worker's may arrive too
    assert inspect(str(dead)).entries == 0


def rows_in(path: Path) -> int:
    """The rows the file holds, counted by SQLite itself (WAL included)."""
    with sqlite3.connect(path) as db:
        count: int = db.execute("SELECT count(*) FROM entries").fetchone()[0]
        assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    db.close()
    return count


async def fill_during_an_outage(koala: KoalaClient, count: int) -> None:
    for i in range(count):
        await koala.track("Step", email=f"p{i % 97}@acme.com")


@pytest.mark.parametrize("cancel", [False, True], ids=["close", "cancelled-close"])
async def test_the_file_holds_what_close_counts_after_a_flood(tmp_path: Path, cancel: bool) -> None:
    """50,000 entries accepted during an outage (the writer far behind), then a close,
    cancelled over and over while it runs: no SQLite error, and the file holds exactly what
    FlushResult.spooled and stats().spooled say. (benchmarks/spool_close.py runs 1,000,000,
    20 times, in processes under faulthandler.)"""
    path = tmp_path / "spool.db"
    url, _ = down_url()
    koala = client(url, path, max_queue_size=5000, shutdown_timeout=0.2, spool_commit_interval=0.2)
    result = None
    with anyio.CancelScope() as scope:
        async with koala:
            await fill_during_an_outage(koala, 50_000)
            if cancel:
                # The close runs cancelled: at once and at every later await of the task
                # (anyio cancels the task again and again on asyncio; trio's is
                # level-triggered).
                scope.cancel()
            else:
                result = await koala.aclose()
    assert scope.cancel_called == cancel
    stats = koala.stats()
    invariant(stats)
    assert stats.dropped_total == 0
    assert stats.spooled == 50_000
    if result is not None:
        assert result.spooled == stats.spooled
    assert rows_in(path) == stats.spooled


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB filesystem (tmpfs, mounted here: root only), for a spool whose disk fills."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode:
        pytest.skip(f"a 1 MB tmpfs cannot be mounted here (needs root): {done.stderr!r}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte; return the filler."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


@pytest.mark.parametrize("endpoint", ["down", "up"])
async def test_a_full_disk_is_reported_once_bounded_and_counted_true(
    full_disk: Path, endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk fills after the spool was opened: the cause is logged once at error level
    with the path and the fix; the rows waiting to be written stay under the cap (beyond,
    entries are dropped as spool_full); after close the file holds what spooled says."""
    path = full_disk / "spool.db"
    fake = FakeCollector()
    url, port = down_url()
    async with fake.serve(port=port) if endpoint == "up" else nullcontext():
        koala = client(url, path, max_queue_size=1000, shutdown_timeout=0.5)
        async with koala:
            filler = fill(full_disk)
            spool = koala._engine._spool
            assert spool is not None
            most = 0
            for i in range(20_000):
                await koala.track("Step", email=f"p{i % 7}@acme.com")  # None: dropped
                most = max(most, spool.unwritten)
                if i % 500 == 0:
                    await anyio.sleep(0.005)
            if endpoint == "down":  # memory bounded: the rows waiting + those being written
                assert most <= 2 * spool.cap + FILE_EVERY
            else:  # delivered entries' rows and deletions do not pile up
                await wait_settled(koala)
                with anyio.fail_after(10):
                    while spool.unwritten or spool._deletes:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
        stats = koala.stats()
        assert filler.exists()
    invariant(stats)
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "full" in r.getMessage()]
    assert errors, caplog.text
    assert str(path) in errors[0].getMessage()
    assert "free space" in errors[0].getMessage()
    assert len([r for r in errors if "the disk holding" in r.getMessage()]) == 1  # once
    assert "no transaction is active" not in caplog.text
    assert rows_in(path) == stats.spooled
    if endpoint == "down":
        assert stats.dropped["spool_full"] > 0
        assert stats.delivered == 0
    else:
        assert stats.spooled == 0
        assert stats.delivered + stats.dropped["spool_full"] == 20_000


def chattr(flag: str, path: Path) -> None:
    """Make ``path`` immutable (+i) or not (-i): root ignores permission bits, not this."""
    done = subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False)
    if done.returncode:
        pytest.skip(f"chattr {flag} is not permitted here: {done.stderr!r}")


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("cause", ["read-only-directory", "immutable-file", "missing-parent"])
async def test_a_spool_that_cannot_be_written_is_refused_at_open_and_leaks_nothing(
    tmp_path: Path, cause: str
) -> None:
    """SpoolError names the path and the fix; no fd or lock is left behind, so once the
    cause is fixed a retry in the same process opens the spool (and sends what it holds)."""
    directory = tmp_path / "spools"
    path = directory / "spool.db"
    url, port = down_url()
    if cause != "missing-parent":
        directory.mkdir()
        async with client(url, path, shutdown_timeout=0) as koala:  # 5 entries wait in it
            await produce(koala, 5)
        assert koala.stats().spooled == 5
    target = {"read-only-directory": directory, "immutable-file": path}.get(cause)
    if target is not None:
        for leftover in directory.glob("spool.db?*"):  # -wal, -shm, .lock: a fresh checkout
            leftover.unlink()
        chattr("+i", target)
    before = open_fds()
    try:
        for _ in range(2):  # twice: the first attempt left nothing that trips the second
            with pytest.raises(SpoolError) as caught:
                await client(url, path).__aenter__()
            message = str(caught.value)
            assert str(path) in message
            assert "in use by process" not in message
            if cause == "missing-parent":
                assert f"the directory {directory} does not exist: create it" in message
            else:
                assert "must be writable by this process" in message
        assert open_fds() == before
    finally:
        if target is not None:
            chattr("-i", target)
    directory.mkdir(exist_ok=True)
    fake = FakeCollector()
    async with fake.serve(port=port), client(url, path) as again:
        await wait_settled(again)
    assert again.stats().delivered == (0 if cause == "missing-parent" else 5)


async def test_flush_waits_for_recovered_entries(tmp_path: Path) -> None:
    """flush() right after opening a spool that holds entries waits for them, as for any
    accepted entry: they are sent, not left for aclose()."""
    path = tmp_path / "spool.db"
    url, port = down_url()
    async with client(url, path, max_queue_size=500, shutdown_timeout=0.1) as koala:
        ids = await produce(koala, 3000)
    assert koala.stats().spooled == 3000
    fake = FakeCollector()
    async with fake.serve(port=port), client(url, path, max_queue_size=500) as again:
        result = await again.flush(timeout=30)
        assert (result.delivered, result.pending, result.spooled) == (3000, 0, 0)
        once(fake, ids)
        in_order(fake)


_WORKER = """
import sys, anyio
from koala_async import KoalaClient

async def main(directory, url, name):
    async with KoalaClient("pk_test", base_url=url, spool_dir=directory,
                           spool_commit_interval=0.02, max_queue_size=50) as koala:
        print(koala._engine.spool_path, flush=True)
        spool = koala._engine._spool
        i = 0
        while True:
            for _ in range(50):
                await koala.track("Step", email=f"p{i % 5}@acme.com", message_id=f"{name}-{i:06d}")
                i += 1
            commits = spool.commits
            while spool.commits < commits + 2:  # everything made so far is on disk now
                await anyio.sleep(0.005)
            print(i, flush=True)

anyio.run(main, *sys.argv[1:4], backend=sys.argv[4])
"""


async def test_workers_sharing_a_spool_dir_all_start_and_a_killed_ones_entries_are_sent(
    tmp_path: Path, anyio_backend: str
) -> None:
    """Three worker processes start at once with one configuration (spool_dir): none fails,
    each takes its own file. One is killed with SIGKILL; its successor (a new client on the
    same directory) takes a free file and adopts the dead one's, and sends all that the dead
    one had committed, while a live sibling's file is left to it."""
    directory = tmp_path / "spools"
    directory.mkdir()
    url, port = down_url()
    command = [sys.executable, "-c", textwrap.dedent(_WORKER), str(directory), url]
    workers = [
        subprocess.Popen(  # noqa: ASYNC220 - started at once; the reads wait for them
            [*command, name, anyio_backend], stdout=subprocess.PIPE, text=True
        )
        for name in ("a", "b", "c")
    ]
    try:
        files = []
        for worker in workers:
            assert worker.stdout is not None
            files.append(worker.stdout.readline().strip())
        assert len(set(files)) == 3, files  # each its own file, none failed to start
        durable = {}
        for name, worker in zip("abc", workers, strict=True):
            assert worker.stdout is not None
            for _ in range(3):
                durable[name] = int(worker.stdout.readline())
        for worker in workers[:2]:  # a and b die; c lives on
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        fake = FakeCollector()
        successor = KoalaClient(
            "pk_test", base_url=url, spool_dir=directory, spool_commit_interval=TICK,
            retry=FAST, flush_interval=0.05,
        )  # fmt: skip
        async with fake.serve(port=port), successor:
            assert successor._engine.spool_path in files[:2]  # a dead worker's file
            await wait_settled(successor)
        received = set(fake.message_ids())
        for name in "ab":  # what each dead worker had committed, at least
            assert {f"{name}-{i:06d}" for i in range(durable[name])} <= received
        assert not any(mid.startswith("c-") for mid in received)  # a live worker's: its own
        assert successor.stats().recovered == len(received)
        assert sorted(p.name for p in directory.glob("*.db")) == sorted(
            Path(f).name for f in (successor._engine.spool_path, files[2])
        )  # the other dead worker's file was adopted and removed
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
            if worker.stdout is not None:
                worker.stdout.close()


async def test_a_live_sibling_sends_a_killed_workers_entries(
    tmp_path: Path, anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No successor needed: a live worker on the same spool_dir adopts, within a while
    (ADOPT_EVERY), the file of a sibling killed with SIGKILL, and sends what it held."""
    monkeypatch.setattr(_spool, "ADOPT_EVERY", 0.1)
    directory = tmp_path / "spools"
    directory.mkdir()
    down, _ = down_url()
    fake = FakeCollector()
    async with fake.serve() as url:
        sibling = KoalaClient(
            "pk_test", base_url=url, spool_dir=directory, spool_commit_interval=TICK,
            retry=FAST, flush_interval=0.05,
        )  # fmt: skip
        async with sibling:
            command = [sys.executable, "-c", textwrap.dedent(_WORKER), str(directory), down]
            with subprocess.Popen(  # noqa: ASYNC220 - the reads wait for it
                [*command, "w", anyio_backend], stdout=subprocess.PIPE, text=True
            ) as worker:
                try:
                    assert worker.stdout is not None
                    assert worker.stdout.readline().strip() != sibling._engine.spool_path
                    for _ in range(3):
                        durable = int(worker.stdout.readline())
                finally:
                    worker.send_signal(signal.SIGKILL)
                    worker.wait()
            wanted = {f"w-{i:06d}" for i in range(durable)}
            with anyio.fail_after(30):
                while not wanted <= set(fake.message_ids()):  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            await wait_settled(sibling)
        stats = sibling.stats()
    assert stats.recovered >= durable
    assert stats.delivered == stats.recovered
    mine = sibling._engine.spool_path
    assert mine is not None
    assert [p.name for p in directory.glob("*.db")] == [Path(mine).name]


def test_both_clients_say_which_file_their_spool_uses(tmp_path: Path) -> None:
    path = str(tmp_path / "koala.db")
    assert KoalaClient("pk_test", spool=path).spool_path == path
    assert KoalaSyncClient("pk_test", spool=path).spool_path == path
    assert KoalaClient("pk_test").spool_path is None
    assert KoalaSyncClient("pk_test").spool_path is None


def test_runs_groups_consecutive_seqs() -> None:
    assert _spool.runs([]) == []
    assert _spool.runs([5]) == [(5, 5)]
    assert _spool.runs([1, 2, 3, 5, 6, 9]) == [(1, 3), (5, 6), (9, 9)]
    assert _spool.runs([-3, -2, 4, 4, 5]) == [(-3, -2), (4, 5)]  # a repeat stays in its run
    assert _spool.runs([9, 2, 1, 6, 3, 5]) == [(1, 3), (5, 6), (9, 9)]  # in any order


def test_runs_finds_every_gap() -> None:
    """Against the plain walk, on seqs with gaps of every width, anywhere."""
    rng = random.Random(25)
    for _ in range(300):
        seqs = [s for s in range(rng.randrange(0, 200)) if rng.random() < rng.random()]
        expected: list[tuple[int, int]] = []
        for seq in seqs:
            if expected and expected[-1][1] + 1 == seq:
                expected[-1] = (expected[-1][0], seq)
            else:
                expected.append((seq, seq))
        rng.shuffle(seqs)
        assert _spool.runs(seqs) == expected


def made(seqs: range, parked: int = 0, created: float = 1.0) -> list[_spool.Fresh]:
    return [_spool.Fresh(seq, 0, f"p{seq}", None, 0, b"{}", created, parked, None) for seq in seqs]


def held(file: _spool.SpoolFile) -> list[tuple[int, int]]:
    return file._db.execute("SELECT seq, parked FROM entries ORDER BY seq").fetchall()


def test_deleting_and_parking_by_runs_leaves_the_gaps(tmp_path: Path) -> None:
    """A commit deletes and parks exactly the seqs given, in any order, in chunks and in
    entries: the entries between its runs stay where they were."""
    file, _ = _spool.SpoolFile.open(str(tmp_path / "s.db"))
    try:
        file.commit(made(range(1, 10)) + made(range(10, 14), parked=1), [], [], 1 << 20, 0.0)
        assert held(file) == [(10, 1), (11, 1), (12, 1), (13, 1)]  # the rest: one chunk
        file.commit([], [6, 1, 12, 2, 5, 10], [9, 8], 1 << 20, 0.0)
        assert file.rows == 7
        assert held(file) == [(8, 1), (9, 1), (11, 1), (13, 1)]
        (chunk,) = file._chunks
        assert [chunk.first + i for i, flag in enumerate(chunk.members) if flag] == [3, 4, 7]
        file.commit([], [3, 4, 7], [], 1 << 20, 0.0)  # its last members: the chunk goes
        assert file._chunks == []
        assert file._db.execute("SELECT count(*) FROM chunks").fetchone()[0] == 0
        assert file.rows == 4
    finally:
        file.close()


def test_a_failed_commit_leaves_the_chunks_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file, _ = _spool.SpoolFile.open(str(tmp_path / "s.db"))
    try:
        file.commit(made(range(1, 6)), [], [], 1 << 20, 0.0)

        def full(cutoff: float) -> int:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(file, "_expire", full)
        with pytest.raises(sqlite3.OperationalError):
            file.commit(made(range(6, 8)), [1, 2, 3, 4, 5], [], 1 << 20, 0.0)
        (chunk,) = file._chunks
        assert (chunk.unsettled, bytes(chunk.members), file.rows) == (5, b"\x01" * 5, 5)
    finally:
        file.close()


def settled_runs(file: _spool.SpoolFile) -> list[tuple[int, int, int]]:
    return file._db.execute("SELECT * FROM settled ORDER BY chunk, first").fetchall()


def test_a_crash_leaves_chunks_that_the_next_open_parks_in_order(tmp_path: Path) -> None:
    """What a chunk's commits recorded as settled (delivered, or moved to entries by a
    park) is not sent again after a crash: the next open parks the rest, in seq order,
    once; so do inspect and rows."""
    path = str(tmp_path / "s.db")
    file, _ = _spool.SpoolFile.open(path)
    file.commit(made(range(1, 5), created=5.0), [], [], 1 << 20, 0.0)
    file.commit(made(range(5, 7), parked=1, created=6.0) + made(range(7, 9), created=7.0),
                [2], [3], 1 << 20, 0.0)  # fmt: skip
    assert settled_runs(file) == [(1, 2, 2), (1, 3, 3)]
    file.close()  # as a kill -9 would leave it: two chunks
    left = [1, 3, 4, 5, 6, 7, 8]  # 2 was delivered; 3, parked, is in entries once
    summary = inspect(path)
    assert (summary.entries, summary.oldest, summary.people) == (7, 5.0, 7)
    assert [row[1] for row in _spool.rows(path)] == [f"p{seq}" for seq in left]
    assert _spool.oldest(path) == 5.0
    file, count = _spool.SpoolFile.open(path)
    try:
        assert count == file.rows == 7
        assert held(file) == [(seq, 1) for seq in left]
        assert file._db.execute("SELECT count(*) FROM chunks").fetchone()[0] == 0
        assert settled_runs(file) == []
    finally:
        file.close()


def test_a_chunk_settled_in_full_goes_with_its_records(tmp_path: Path) -> None:
    file, _ = _spool.SpoolFile.open(str(tmp_path / "s.db"))
    try:
        file.commit(made(range(1, 7)), [], [], 1 << 20, 0.0)
        file.commit([], [1, 2, 5], [], 1 << 20, 0.0)
        assert settled_runs(file) == [(1, 1, 2), (1, 5, 5)]
        file.commit([], [3, 4, 6], [], 1 << 20, 0.0)
        assert settled_runs(file) == []
        assert file._db.execute("SELECT count(*) FROM chunks").fetchone()[0] == 0
    finally:
        file.close()


def test_a_file_of_the_previous_release_is_read_and_drained(tmp_path: Path) -> None:
    path = str(tmp_path / "v1.db")
    with sqlite3.connect(path) as db:
        db.executescript(
            f"{_spool._SCHEMA} PRAGMA application_id={_spool.APPLICATION_ID}; "
            "PRAGMA user_version=1;"
        )
        rows = [row.row() for row in made(range(1, 4))]
        db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.close()
    assert inspect(path).entries == 3  # read only: as it is
    assert _spool.oldest(path) == 1.0
    assert [row[1] for row in _spool.rows(path)] == ["p1", "p2", "p3"]
    file, count = _spool.SpoolFile.open(path)
    try:
        assert count == 3
        assert file._db.execute("PRAGMA user_version").fetchone()[0] == _spool.VERSION == 2
        assert [row[0] for row in file.load(10)] == [1, 2, 3]
    finally:
        file.close()


def as_version_1(path: Path) -> None:
    """Make a spool closed by this release what the previous one would have left: its
    entries table only (every entry of a closed spool is a row of it), version 1."""
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM chunks").fetchone()[0] == 0
        db.executescript("DROP TABLE settled; DROP TABLE chunks; PRAGMA user_version=1;")
    db.close()


async def test_a_client_replays_a_file_of_the_previous_release(tmp_path: Path) -> None:
    """A version-1 file's entries (real ones, resident and parked at the crash) are sent
    once each, in order, by a client of this release, which upgrades the file."""
    path = tmp_path / "spool.db"
    url, port = down_url()
    async with client(url, path, max_queue_size=50, shutdown_timeout=0.2) as koala:
        ids = await produce(koala, 120)
    assert koala.stats().spooled == 120
    as_version_1(path)
    with sqlite3.connect(path) as db:  # a crash leaves resident rows: the open parks them
        db.execute("UPDATE entries SET parked = 0 WHERE seq % 2 = 0")
    db.close()
    fake = FakeCollector()
    async with fake.serve(port=port), client(url, path) as again:
        await wait_settled(again)
    invariant(again.stats())
    assert again.stats().recovered == 120
    once(fake, ids)
    in_order(fake)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == _spool.VERSION
        assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 0
    db.close()
