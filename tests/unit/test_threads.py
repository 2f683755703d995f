"""The shared id and timestamp caches are safe to use from many threads (a sync client will)."""

from __future__ import annotations

import itertools
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone

import pytest
from wire_check import is_uuid4

from koala_async import _wire

THREADS = 16
CALLS = 10_000
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


@pytest.fixture(params=[1e-6, 1e-4], ids=["switch-1us", "switch-100us"])
def switch_interval(request: pytest.FixtureRequest) -> Iterator[None]:
    """Switch threads often, so a thread is often switched out between a check and its act.

    (Found by trial: at 1 µs and 100 µs the old ``if not _ids: refill; _ids.pop()`` raised
    IndexError within 1.6 M calls; at the default 5 ms it did not.)
    """
    interval = sys.getswitchinterval()
    sys.setswitchinterval(request.param)
    yield
    sys.setswitchinterval(interval)


def _in_threads(call: Callable[[], str], calls: int = CALLS) -> list[list[str]]:
    """Run ``call`` ``calls`` times in each of THREADS threads, started together; assert none
    raised."""
    results: list[list[str]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(out: list[str]) -> None:
        try:
            start.wait()
            for _ in range(calls):
                out.append(call())
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return results


@pytest.mark.usefixtures("switch_interval")
def test_message_ids_from_many_threads_are_unique_and_well_formed() -> None:
    _wire._ids.clear()  # every thread starts on an empty list: the refill race at its worst
    ids = [i for out in _in_threads(_wire.new_message_id) for i in out]
    assert len(ids) == THREADS * CALLS
    assert len(set(ids)) == len(ids)
    assert all(is_uuid4(i) for i in ids)


class _SlowRefill(list[str]):
    """Ids whose refill ends in a pause: as if the refilling thread were switched out."""

    def extend(self, ids: Iterable[str]) -> None:
        super().extend(ids)
        time.sleep(0.002)  # others drain the new block meanwhile


def test_message_ids_survive_a_thread_paused_after_refilling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Deterministic where the test above relies on luck: "if not _ids: refill; _ids.pop()"
    # pops from a list the other threads emptied while it slept.
    monkeypatch.setattr(_wire, "_ids", _SlowRefill())
    ids = [i for out in _in_threads(_wire.new_message_id, calls=2000) for i in out]
    assert len(set(ids)) == len(ids) == THREADS * 2000
    assert all(is_uuid4(i) for i in ids)


@pytest.mark.usefixtures("switch_interval")
def test_timestamps_from_many_threads_are_valid_and_current() -> None:
    before = datetime.now(timezone.utc) - timedelta(milliseconds=1)
    results = _in_threads(_wire.now_iso)
    after = datetime.now(timezone.utc) + timedelta(milliseconds=1)
    for out in results:
        assert all(ISO.match(t) for t in out)
        times = [datetime.fromisoformat(t[:-1] + "+00:00") for t in out]
        assert before <= min(times)
        assert max(times) <= after
        # Within one thread time never runs backwards by more than a stale cache allows.
        assert all(b - a > timedelta(milliseconds=-50) for a, b in itertools.pairwise(times))


def test_now_iso_pairs_each_millisecond_with_its_own_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each thread sees its own clock, years apart, so a torn (time, text) pair shows as a
    # text from another thread's clock. (The old separate globals did not tear on CPython
    # 3.11 either: no call ran between their two stores. This keeps it so.)
    clocks: dict[int, int] = {}
    base = 1_700_000_000_000_000_000

    def monotonic() -> float:
        me = threading.get_ident()
        # A new second on every call, so every call formats and stores both pairs.
        clocks[me] = clocks.get(me, len(clocks) * 10**14 + base) + 1_001_000_000
        return clocks[me] / 1e9

    def time_ns() -> int:
        return clocks[threading.get_ident()]  # read just after monotonic(), by now_iso

    monkeypatch.setattr(_wire, "_monotonic", monotonic)
    monkeypatch.setattr(time, "time_ns", time_ns)

    def stamp() -> str:
        text = _wire.now_iso()
        return f"{clocks[threading.get_ident()] // 1_000_000}|{text}"

    for out in _in_threads(stamp, calls=2000):
        for pair in out:
            millisecond, text = pair.split("|")
            second, fraction = divmod(int(millisecond), 1000)
            expected = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            assert text == f"{expected}.{fraction:03d}Z"
