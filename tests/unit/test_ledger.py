"""The ledger's accounting: every entry a call accepted is delivered, dropped (with its
reason), pending in memory or spooled on disk, whatever the order of events; and a flush
wakes once the last batch it waits for is settled, not before."""

from __future__ import annotations

import pytest

from koala_async._ledger import Ledger
from koala_async._queue import EVENTS, Batch, Waiter
from koala_async._stats import DROP_REASONS


class _Flag:
    def __init__(self) -> None:
        self.times = 0

    def set(self) -> None:
        self.times += 1


def _batch(size: int) -> Batch:
    batch = Batch()
    for _ in range(size):
        batch.append(EVENTS, b"{}")
    return batch


def _balances(ledger: Ledger) -> bool:
    dropped = sum(ledger.dropped.values())
    assert dropped == ledger.dropped_total
    return ledger.accepted == ledger.delivered + dropped + ledger.pending + ledger.spooled


def test_a_new_ledger_has_counted_nothing_and_names_every_drop_reason() -> None:
    ledger = Ledger()
    assert ledger.dropped == {reason: 0 for reason in DROP_REASONS}
    assert (ledger.accepted, ledger.delivered, ledger.dropped_total) == (0, 0, 0)
    assert (ledger.pending, ledger.spooled, ledger.recovered) == (0, 0, 0)
    assert (ledger.requests, ledger.retries, ledger.request_seconds) == (0, 0, 0.0)


def test_an_accepted_entry_is_pending_until_its_batch_is_delivered() -> None:
    ledger = Ledger()
    for _ in range(3):
        ledger.accept()
    assert (ledger.accepted, ledger.pending) == (3, 3)
    ledger.settle(_batch(3), None)
    assert (ledger.accepted, ledger.pending, ledger.delivered, ledger.dropped_total) == (3, 0, 3, 0)
    assert _balances(ledger)


def test_a_batch_given_up_counts_its_entries_under_its_reason_alone() -> None:
    ledger = Ledger()
    for _ in range(4):
        ledger.accept()
    ledger.settle(_batch(4), "rejected")
    assert ledger.dropped == {reason: 4 if reason == "rejected" else 0 for reason in DROP_REASONS}
    assert (ledger.accepted, ledger.pending, ledger.delivered, ledger.dropped_total) == (4, 0, 0, 4)
    assert _balances(ledger)


def test_a_batch_settled_twice_is_counted_once() -> None:
    ledger = Ledger()
    ledger.accept()
    ledger.accept()
    batch = _batch(2)
    ledger.settle(batch, None)
    ledger.settle(batch, "retries_exhausted")
    assert (ledger.delivered, ledger.dropped_total, ledger.pending) == (2, 0, 0)
    assert batch.size == 0


def test_an_entry_refused_at_the_call_is_accepted_and_dropped_at_once() -> None:
    ledger = Ledger()
    ledger.refuse("queue_full")
    ledger.refuse("queue_full")
    assert (ledger.accepted, ledger.pending, ledger.dropped_total) == (2, 0, 2)
    assert ledger.dropped["queue_full"] == 2
    assert _balances(ledger)


def test_a_queued_entry_lost_outside_a_batch_moves_from_pending_to_dropped() -> None:
    ledger = Ledger()
    ledger.accept()
    ledger.accept()
    ledger.lose("unauthorized")
    assert (ledger.accepted, ledger.pending, ledger.dropped_total) == (2, 1, 1)
    assert ledger.dropped["unauthorized"] == 1
    assert _balances(ledger)


def test_a_flush_wakes_once_the_last_of_its_batches_is_settled() -> None:
    ledger = Ledger()
    for _ in range(3):
        ledger.accept()
    flag = _Flag()
    waiter = Waiter(flag)
    first, second = _batch(1), _batch(2)
    waiter.add(first)
    waiter.add(second)
    ledger.settle(first, None)
    assert (flag.times, waiter.left) == (0, 1)
    ledger.settle(second, "gone")
    assert (flag.times, waiter.left) == (1, 0)


def test_every_flush_waiting_on_a_batch_is_told_when_it_settles() -> None:
    ledger = Ledger()
    ledger.accept()
    flags = _Flag(), _Flag()
    batch = _batch(1)
    for flag in flags:
        Waiter(flag).add(batch)
    ledger.settle(batch, None)
    assert [flag.times for flag in flags] == [1, 1]


def test_the_spool_recovered_at_open_counts_as_accepted_and_spooled() -> None:
    ledger = Ledger()
    ledger.recover(5)
    ledger.recover(2)
    assert (ledger.accepted, ledger.spooled, ledger.recovered, ledger.pending) == (7, 7, 7, 0)
    assert _balances(ledger)


def test_an_entry_spilled_to_disk_is_accepted_and_spooled_not_pending() -> None:
    ledger = Ledger()
    ledger.spill()
    ledger.spill()
    assert (ledger.accepted, ledger.spooled, ledger.pending, ledger.recovered) == (2, 2, 0, 0)


def test_entries_read_back_from_the_spool_move_to_pending_without_changing_the_total() -> None:
    ledger = Ledger()
    ledger.recover(5)
    ledger.load(3)
    assert (ledger.accepted, ledger.spooled, ledger.pending) == (5, 2, 3)
    assert _balances(ledger)


def test_a_batch_released_to_the_spool_leaves_memory_and_wakes_its_flush() -> None:
    ledger = Ledger()
    for _ in range(3):
        ledger.accept()
    flag = _Flag()
    waiter = Waiter(flag)
    batch = _batch(3)
    waiter.add(batch)
    ledger.release(batch)
    assert (ledger.accepted, ledger.pending, ledger.spooled, ledger.delivered) == (3, 0, 3, 0)
    assert (flag.times, waiter.left, batch.size) == (1, 0, 0)
    ledger.release(batch)  # released once, whatever happens to the object later
    assert (ledger.pending, ledger.spooled) == (0, 3)


def test_a_release_does_not_wake_a_flush_still_waiting_on_another_batch() -> None:
    ledger = Ledger()
    ledger.accept()
    ledger.accept()
    flag = _Flag()
    waiter = Waiter(flag)
    first, second = _batch(1), _batch(1)
    waiter.add(first)
    waiter.add(second)
    ledger.release(first)
    assert (flag.times, waiter.left) == (0, 1)
    ledger.release(second)
    assert flag.times == 1


@pytest.mark.parametrize("reason", ["spool_full", "expired"])
def test_entries_the_spool_drops_move_from_spooled_to_dropped(reason: str) -> None:
    ledger = Ledger()
    ledger.recover(4)
    ledger.discard(reason, 3)  # type: ignore[arg-type]
    assert (ledger.accepted, ledger.spooled, ledger.dropped_total) == (4, 1, 3)
    assert ledger.dropped == {r: 3 if r == reason else 0 for r in DROP_REASONS}
    assert _balances(ledger)


def test_the_total_balances_after_any_mix_of_events() -> None:
    ledger = Ledger()
    ledger.recover(2)
    ledger.accept()
    ledger.accept()
    ledger.spill()
    ledger.refuse("queue_full")
    ledger.load(2)
    ledger.lose("expired")
    ledger.settle(_batch(2), None)
    ledger.release(_batch(1))
    ledger.discard("spool_full", 1)
    assert ledger.accepted == 6
    assert (ledger.delivered, ledger.dropped_total, ledger.pending, ledger.spooled) == (2, 3, 0, 1)
    assert _balances(ledger)


def test_counts_add_up_over_many_batches() -> None:
    ledger = Ledger()
    for _ in range(10):
        ledger.accept()
    ledger.settle(_batch(2), None)
    ledger.settle(_batch(3), None)
    ledger.settle(_batch(1), "rejected")
    ledger.settle(_batch(4), "rejected")
    ledger.recover(5)
    ledger.discard("expired", 2)
    ledger.discard("expired", 1)
    assert (ledger.delivered, ledger.dropped_total, ledger.pending, ledger.spooled) == (5, 8, 0, 2)
    assert (ledger.dropped["rejected"], ledger.dropped["expired"]) == (5, 3)
    assert _balances(ledger)
