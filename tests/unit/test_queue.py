"""The queue's promises beyond tests/unit/test_units.py: the ready FIFO takes turns between
people, a person's next batch is sent when due and not before, each request carries one
e-mail and one ip, each kind holds at most 30, and a bad entry never stops the others."""

from __future__ import annotations

import json

import pytest

from koala_async._queue import (
    EVENTS,
    IDENTIFIES,
    LANES,
    PAGE_VIEWS,
    TICKS,
    Batch,
    Item,
    Queue,
    Target,
    Waiter,
    new_seqs,
)
from koala_async._wire import MAX_PER_KIND

A = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"
B = "0b5c8c1e-6a0e-4c1b-9a55-0e7c2d6f9a11"


class _Flag:
    def set(self) -> None:
        pass


def _who(key: str, email: str | None = None) -> tuple[str, str, str, str | None]:
    return ("profile_id", key, "email", email)


def _fill(queue: Queue, key: str, count: int, kind: int = EVENTS) -> list[bool]:
    return [queue.put(kind, str(i).encode(), _who(key)) for i in range(count)]


def _sizes(target: Target) -> list[int]:
    return [batch.size for batch in target.batches()]


def test_nothing_is_ready_in_an_empty_queue() -> None:
    queue = Queue()
    assert queue.take() is None
    assert queue.tick() == 0
    assert queue.schedule_waiting() == 0


def test_each_kind_fills_to_30_on_its_own_in_one_batch() -> None:
    queue = Queue()
    for kind in (PAGE_VIEWS, IDENTIFIES):
        assert _fill(queue, A, MAX_PER_KIND - 1, kind) == [False] * (MAX_PER_KIND - 1)
    target = queue.targets["profile_id"][A]
    assert _fill(queue, A, 1, EVENTS) == [False]
    assert _sizes(target) == [2 * (MAX_PER_KIND - 1) + 1]
    assert queue.put(IDENTIFIES, b"x", _who(A)), "the 30th identify makes it ready"
    batch = target.head
    assert batch is not None
    counts = [batch.count(kind) for kind in (EVENTS, IDENTIFIES, PAGE_VIEWS)]
    assert counts == [1, MAX_PER_KIND, MAX_PER_KIND - 1]
    assert queue.put(PAGE_VIEWS, b"y", _who(A)) is False, "already scheduled: ready once"
    assert batch.count(PAGE_VIEWS) == MAX_PER_KIND
    queue.put(IDENTIFIES, b"z", _who(A))
    assert _sizes(target) == [2 * MAX_PER_KIND + 1, 1], "a 31st identify starts a batch"


def test_a_full_batch_makes_its_person_ready_at_once_in_the_order_they_filled() -> None:
    queue = Queue()
    _fill(queue, A, MAX_PER_KIND - 1)
    assert _fill(queue, B, MAX_PER_KIND) == [False] * (MAX_PER_KIND - 1) + [True]
    assert _fill(queue, A, 1) == [True]
    targets = queue.targets["profile_id"]
    assert [queue.take(), queue.take(), queue.take()] == [targets[B], targets[A], None]


def test_a_busy_person_takes_turns_with_everyone_else() -> None:
    queue = Queue()
    _fill(queue, A, 2 * MAX_PER_KIND)  # two full batches
    _fill(queue, B, MAX_PER_KIND)
    a, b = queue.targets["profile_id"][A], queue.targets["profile_id"][B]
    assert queue.take() is a
    sealed = queue.seal(a)
    assert sealed is not None
    queue.done(a, sealed)
    assert queue.take() is b, "A's second batch waits behind B's first"
    assert queue.take() is a
    assert _sizes(a) == [MAX_PER_KIND]


def test_a_person_with_nothing_more_queued_is_forgotten_once_done() -> None:
    queue = Queue()
    _fill(queue, A, MAX_PER_KIND)
    target = queue.take()
    assert target is not None
    sealed = queue.seal(target)
    assert sealed is not None
    queue.done(target, sealed)
    assert queue.targets["profile_id"] == {}
    assert not target.scheduled
    assert queue.take() is None
    assert queue.schedule_waiting() == 0


def test_a_newer_person_under_the_same_id_is_not_forgotten_by_the_older_ones_done() -> None:
    queue = Queue()
    _fill(queue, A, MAX_PER_KIND)
    old = queue.take()
    assert old is not None
    sealed = queue.seal(old)
    assert sealed is not None
    queue.clear()  # e.g. the close dropped what was queued while a batch was in flight
    _fill(queue, A, 1)
    new = queue.targets["profile_id"][A]
    queue.done(old, sealed)
    assert queue.targets["profile_id"] == {A: new}


def test_a_next_batch_still_filling_waits_its_turn_in_the_age_buckets() -> None:
    queue = Queue()
    _fill(queue, A, MAX_PER_KIND + 1)  # one full batch, one entry in the next
    target = queue.take()
    assert target is not None
    sealed = queue.seal(target)
    assert sealed is not None
    queue.tick()  # the entry's bucket comes first: it was made before the send ended
    queue.done(target, sealed)
    assert queue.take() is None, "not due yet"
    assert not target.scheduled
    ticks = 1
    while not queue.tick():
        ticks += 1
    assert ticks == TICKS - 1
    assert queue.take() is target


def test_a_next_batch_still_filling_goes_at_once_when_a_flush_waits_for_it() -> None:
    queue = Queue()
    _fill(queue, A, MAX_PER_KIND + 1)
    target = queue.take()
    assert target is not None
    sealed = queue.seal(target)
    assert sealed is not None
    assert target.open is not None
    Waiter(_Flag()).add(target.open)
    queue.done(target, sealed)
    assert queue.take() is target


def test_a_next_batch_still_filling_goes_at_once_when_the_client_is_closing() -> None:
    queue = Queue()
    _fill(queue, A, MAX_PER_KIND + 1)
    target = queue.take()
    assert target is not None
    sealed = queue.seal(target)
    assert sealed is not None
    queue.eager = True
    queue.done(target, sealed)
    assert queue.take() is target


def test_a_full_next_batch_goes_at_once() -> None:
    queue = Queue()
    _fill(queue, A, 2 * MAX_PER_KIND + 1)
    target = queue.take()
    assert target is not None
    sealed = queue.seal(target)
    assert sealed is not None
    queue.done(target, sealed)
    assert queue.take() is target


def test_a_person_is_in_one_age_bucket_at_most() -> None:
    queue = Queue()
    _fill(queue, A, 3)
    queue.tick()
    _fill(queue, A, 3)
    assert sum(len(bucket) for bucket in queue.buckets) == 1
    assert queue.schedule_waiting() == 1
    assert all(bucket == [] for bucket in queue.buckets)
    assert queue.take() is queue.targets["profile_id"][A]
    assert queue.take() is None


def test_a_person_already_ready_is_not_made_ready_again_by_its_bucket() -> None:
    queue = Queue()
    _fill(queue, A, 1)
    _fill(queue, A, MAX_PER_KIND - 1)  # full now: ready, and still in the first bucket
    assert queue.schedule_waiting() == 0
    assert queue.take() is queue.targets["profile_id"][A]
    assert queue.take() is None


def test_a_flush_makes_every_waiting_person_ready() -> None:
    queue = Queue()
    _fill(queue, A, 1)
    queue.tick()
    _fill(queue, B, 1)
    assert queue.schedule_waiting() == 2
    targets = queue.targets["profile_id"]
    assert [queue.take(), queue.take()] == [targets[A], targets[B]]


def test_intake_counts_the_people_who_became_ready() -> None:
    queue = Queue()
    for key in (A, B):
        for i in range(MAX_PER_KIND):
            queue.add(EVENTS, str(i).encode(), _who(key))
    queue.add(EVENTS, b"x", ("profile_id", "c", "email", None))
    assert queue.intake() == 2
    assert queue.tick() == 0


def test_a_tick_counts_both_the_filed_and_the_aged() -> None:
    queue = Queue()
    _fill(queue, A, 1)
    for _ in range(TICKS - 1):
        assert queue.tick() == 0
    for i in range(MAX_PER_KIND):
        queue.add(EVENTS, str(i).encode(), _who(B))
    assert queue.tick() == 2


def test_an_entry_that_cannot_be_filed_is_reported_and_the_rest_are_filed() -> None:
    queue = Queue()
    unfiled: list[tuple[str, Item]] = []
    queue.on_unfiled = lambda error, item: unfiled.append((type(error).__name__, item))
    queue.add(EVENTS, b"1", _who(A))
    queue.add(EVENTS, b"2", ("no_such_field", A, "email", None))
    queue.add(EVENTS, b"3", _who(A), "10.0.0.1")
    queue.intake()
    assert unfiled == [
        ("KeyError", (EVENTS, b"2", ("no_such_field", A, "email", None), None, None))
    ]
    target = queue.targets["profile_id"][A]
    assert [raw for batch in target.batches() for _, raw in batch.entries()] == [b"1", b"3"]


def test_by_default_an_entry_that_cannot_be_filed_raises() -> None:
    queue = Queue()
    queue.add(EVENTS, b"1", ("no_such_field", A, "email", None))
    with pytest.raises(KeyError):
        queue.intake()


def test_a_request_carries_one_visitor_ip() -> None:
    queue = Queue()
    queue.put(EVENTS, b"1", _who(A))
    queue.put(EVENTS, b"2", _who(A), "10.0.0.1")  # joins the batch without an ip
    queue.put(EVENTS, b"3", _who(A))  # joins the batch with one
    queue.put(EVENTS, b"4", _who(A), "10.0.0.1")
    queue.put(EVENTS, b"5", _who(A), "10.0.0.2")
    target = queue.targets["profile_id"][A]
    assert [(batch.size, batch.ip) for batch in target.batches()] == [
        (4, "10.0.0.1"),
        (1, "10.0.0.2"),
    ]
    assert [target.ids(batch) for batch in target.batches()] == [
        {"profile_id": A, "ip": "10.0.0.1"},
        {"profile_id": A, "ip": "10.0.0.2"},
    ]


def test_an_email_joins_a_batch_without_one_and_is_sent_with_it() -> None:
    queue = Queue()
    queue.put(EVENTS, b"1", _who(A))
    queue.put(EVENTS, b"2", _who(A, "ada@acme.com"))
    target = queue.targets["profile_id"][A]
    assert target.head is not None
    assert _sizes(target) == [2]
    assert target.ids(target.head) == {"profile_id": A, "email": "ada@acme.com"}
    assert json.loads(target.body(target.head)) == {
        "profile_id": A,
        "email": "ada@acme.com",
        "events": [1, 2],
    }


def test_accounts_and_people_are_queued_apart_and_told_apart() -> None:
    queue = Queue()
    queue.put(EVENTS, b"1", ("domain", "acme.com", "account_id", "42"))
    queue.put(EVENTS, b"2", ("email", "acme.com", "profile_id", None))
    account = queue.targets["domain"]["acme.com"]
    person = queue.targets["email"]["acme.com"]
    assert account is not person
    assert account.account
    assert not person.account
    assert Target(
        "account_id",
        "42",
        "domain",
    ).account
    assert not Target("profile_id", A, "email").account
    assert account.head is not None
    assert account.ids(account.head) == {"domain": "acme.com", "account_id": "42"}


def test_the_newest_batch_is_the_last_of_the_chain_once_all_are_sealed() -> None:
    queue = Queue()
    target = Target("profile_id", A, "email")
    assert target.last() is None
    _fill(queue, A, MAX_PER_KIND + 5)
    target = queue.targets["profile_id"][A]
    newest = target.open
    sealed = queue.seal(target)
    assert sealed is not None
    target.open = None  # sealed as if at a 413 split or a close
    assert target.last() is newest


def test_seal_leaves_a_later_open_batch_open() -> None:
    queue = Queue()
    _fill(queue, A, MAX_PER_KIND + 1)
    target = queue.targets["profile_id"][A]
    open_batch = target.open
    assert target.seal() is target.head
    assert target.open is open_batch is not None


def test_cut_leaves_only_the_batches_in_flight_and_new_entries_start_a_new_one() -> None:
    queue = Queue()
    _fill(queue, A, 2 * MAX_PER_KIND + 2)
    target = queue.targets["profile_id"][A]
    flying = target.seal()
    assert [batch.size for batch in target.cut()] == [MAX_PER_KIND, 2]
    assert list(target.batches()) == [flying]
    assert target.open is None
    queue.put(EVENTS, b"new", _who(A))
    assert _sizes(target) == [MAX_PER_KIND, 1]


def test_halves_keep_each_entrys_spool_row_and_flushes_wait_for_both() -> None:
    batch = Batch("ada@acme.com", "10.0.0.1")
    for kind, raw in ((EVENTS, b"1"), (EVENTS, b"2"), (IDENTIFIES, b"3"), (PAGE_VIEWS, b"4")):
        batch.append(kind, raw)
    batch.seqs = new_seqs()
    for kind, seqs in enumerate(([10, 11], [12], [13])):
        batch.seqs[kind].extend(seqs)
    waiter = Waiter(_Flag())
    waiter.add(batch)
    first, second = batch.halves()
    assert first.seqs is not None
    assert second.seqs is not None
    assert [list(s) for s in (*first.seqs, *second.seqs)] == [[10, 11], [], [], [], [12], [13]]
    assert (first.ip, second.ip) == ("10.0.0.1", "10.0.0.1")
    assert waiter.left == 2
    assert first.waiters == second.waiters == [waiter]


def test_halves_of_a_batch_without_a_spool_have_no_rows() -> None:
    batch = Batch()
    batch.append(EVENTS, b"1")
    batch.append(EVENTS, b"2")
    first, second = batch.halves()
    assert (first.seqs, second.seqs, first.waiters) == (None, None, None)
    assert (first.entries(), second.entries()) == ([(EVENTS, b"1")], [(EVENTS, b"2")])


def test_a_batch_keeps_each_kinds_entries_in_order_and_counts_them() -> None:
    batch = Batch()
    assert [batch.append(PAGE_VIEWS, b"%d" % i) for i in range(3)] == [1, 2, 3]
    assert batch.append(EVENTS, b"9") == 1
    assert (batch.size, batch.count(PAGE_VIEWS), batch.count(EVENTS)) == (4, 3, 1)
    assert batch.count(IDENTIFIES) == 0
    assert batch.buffers == (b"9", None, b"0,1,2")
    assert batch.entries() == [
        (EVENTS, b"9"),
        (PAGE_VIEWS, b"0"),
        (PAGE_VIEWS, b"1"),
        (PAGE_VIEWS, b"2"),
    ]


def test_a_flush_waiting_on_two_batches_counts_both() -> None:
    first, second = Batch(), Batch()
    waiters = Waiter(_Flag()), Waiter(_Flag())
    for waiter in waiters:
        waiter.add(first)
    waiters[0].add(second)
    assert [waiter.left for waiter in waiters] == [2, 1]
    assert first.waiters == list(waiters)


def test_clear_empties_every_part_of_the_queue() -> None:
    queue = Queue()
    _fill(queue, A, MAX_PER_KIND)
    _fill(queue, B, 1)
    queue.add(EVENTS, b"x", _who(A))
    queue.clear()
    assert queue.inbox == []
    assert all(targets == {} for targets in queue.targets.values())
    assert all(bucket == [] for bucket in queue.buckets)
    assert queue.take() is None


def test_a_next_batch_full_of_another_kind_goes_at_once() -> None:
    for kind in (IDENTIFIES, PAGE_VIEWS):
        queue = Queue()
        _fill(queue, A, MAX_PER_KIND)
        target = queue.take()
        assert target is not None
        sealed = queue.seal(target)
        assert sealed is not None
        _fill(queue, A, MAX_PER_KIND, kind)  # a new batch: the first is in flight
        queue.done(target, sealed)
        assert queue.take() is target, kind


def test_thirty_of_one_kind_leave_room_for_the_others() -> None:
    queue = Queue()
    _fill(queue, A, MAX_PER_KIND, PAGE_VIEWS)
    queue.put(IDENTIFIES, b"i", _who(A))
    queue.put(EVENTS, b"e", _who(A))
    assert _sizes(queue.targets["profile_id"][A]) == [MAX_PER_KIND + 2]


def _in_flight_with_a_new_entry(queue: Queue) -> tuple[Target, Batch]:
    """A person made ready by a flush, their batch taken, one more entry arriving meanwhile."""
    _fill(queue, A, 1)
    assert queue.schedule_waiting() == 1
    target = queue.take()
    assert target is not None
    sealed = queue.seal(target)
    assert sealed is not None
    queue.put(EVENTS, b"later", _who(A))
    return target, sealed


def test_an_entry_made_while_its_person_was_in_flight_is_sent_a_flush_interval_later() -> None:
    queue = Queue()
    target, sealed = _in_flight_with_a_new_entry(queue)
    queue.done(target, sealed)
    assert queue.take() is None
    ticks = [queue.tick() for _ in range(TICKS)]
    assert ticks == [0] * (TICKS - 1) + [1]
    assert queue.take() is target
    assert queue.take() is None


def test_a_person_back_in_the_buckets_is_in_one_only() -> None:
    queue = Queue()
    target, sealed = _in_flight_with_a_new_entry(queue)
    queue.done(target, sealed)
    queue.tick()
    queue.put(EVENTS, b"more", _who(A))
    assert sum(bucket.count(target) for bucket in queue.buckets) == 1


def test_a_person_made_ready_by_age_then_filled_is_ready_once() -> None:
    queue = Queue()
    _fill(queue, A, 1)
    assert queue.schedule_waiting() == 1
    _fill(queue, A, MAX_PER_KIND - 1)  # the batch is full now, while already ready
    assert list(queue.ready) == [queue.targets["profile_id"][A]]


def test_a_tick_counts_every_person_of_its_bucket() -> None:
    queue = Queue()
    _fill(queue, A, 1)
    _fill(queue, B, 1)
    assert [queue.tick() for _ in range(TICKS)][-1] == 2


def test_an_entrys_ip_survives_the_inbox() -> None:
    queue = Queue()
    queue.add(EVENTS, b"1", _who(A), "10.0.0.1")
    queue.intake()
    target = queue.targets["profile_id"][A]
    assert target.head is not None
    assert target.head.ip == "10.0.0.1"
    assert json.loads(target.body(target.head)) == {
        "profile_id": A,
        "ip": "10.0.0.1",
        "events": [1],
    }


def test_an_account_known_only_by_its_id_is_queued() -> None:
    queue = Queue()
    queue.put(EVENTS, b"1", ("account_id", "42", "domain", None))
    target = queue.targets["account_id"]["42"]
    assert target.account
    assert target.head is not None
    assert json.loads(target.body(target.head)) == {"account_id": "42", "events": [1]}


# Lanes: a person's batches of events and page views share the air; an identify goes alone.


def _send_all(queue: Queue) -> list[Batch]:
    """Take and seal what may go now, as free senders would."""
    sealed = []
    while (target := queue.take()) is not None:
        batch = queue.seal(target)
        assert batch is not None
        sealed.append(batch)
    return sealed


def test_a_person_s_full_batches_go_side_by_side_up_to_the_lanes() -> None:
    queue = Queue()
    _fill(queue, A, (LANES + 2) * MAX_PER_KIND)
    target = queue.targets["profile_id"][A]
    flying = _send_all(queue)
    assert len(flying) == LANES, "one sender per batch, up to the lanes"
    assert target.flying == LANES
    queue.done(target, flying[3])  # answers may come in any order
    assert _send_all(queue) == [list(target.batches())[LANES - 1]], "the next one takes its lane"
    assert queue.take() is None


def test_a_batch_with_an_identify_waits_for_all_before_it_and_goes_alone() -> None:
    queue = Queue()
    _fill(queue, A, 2 * MAX_PER_KIND)
    target = queue.targets["profile_id"][A]
    first, second = _send_all(queue)
    queue.put(IDENTIFIES, b'"i"', _who(A))  # a third batch: the first two are sealed
    _fill(queue, A, 2 * MAX_PER_KIND)  # fills the third with events, then a fourth
    assert queue.take() is None, "the identify's batch waits while earlier ones fly"
    queue.done(target, second)
    assert queue.take() is None
    queue.done(target, first)
    (third,) = _send_all(queue)
    assert third.count(IDENTIFIES) == 1, "then it goes, alone"
    queue.done(target, third)
    assert [b.size for b in _send_all(queue)] == [MAX_PER_KIND], "and then the rest"


def test_an_identify_in_flight_holds_back_the_person_s_later_batches() -> None:
    queue = Queue()
    queue.put(IDENTIFIES, b'"i"', _who(A))
    _fill(queue, A, 2 * MAX_PER_KIND)  # the identify's batch full of events, then another
    target = queue.targets["profile_id"][A]
    (first,) = _send_all(queue)
    assert first.count(IDENTIFIES) == 1
    queue.done(target, first)
    assert len(_send_all(queue)) == 1


def test_a_settled_batch_in_the_middle_is_unlinked() -> None:
    queue = Queue()
    _fill(queue, A, 3 * MAX_PER_KIND)
    target = queue.targets["profile_id"][A]
    one, two, three = _send_all(queue)
    queue.done(target, two)
    assert list(target.batches()) == [one, three]
    queue.done(target, three)
    queue.done(target, one)
    assert queue.targets["profile_id"] == {}, "nothing left: forgotten"


def test_a_split_batch_keeps_flying_and_its_second_half_goes_after_it() -> None:
    queue = Queue()
    _fill(queue, A, MAX_PER_KIND)
    target = queue.targets["profile_id"][A]
    (batch,) = _send_all(queue)
    target.split(batch)
    assert batch.flying
    assert batch.size == MAX_PER_KIND // 2
    half = batch.next
    assert half is not None
    assert half.size == MAX_PER_KIND // 2
    assert not half.flying
    queue.done(target, batch)
    assert _send_all(queue) == [half], "the second half goes when the first is settled"


def test_a_filling_batch_held_back_at_its_tick_ages_again_once_the_identify_lands() -> None:
    queue = Queue()
    queue.put(IDENTIFIES, b'"i"', _who(A))
    assert queue.schedule_waiting() == 1
    target = queue.take()
    assert target is not None
    flying = queue.seal(target)
    assert flying is not None
    queue.put(EVENTS, b"1", _who(A))  # a new batch, filling, while the identify flies
    assert [queue.tick() for _ in range(TICKS)] == [0] * TICKS, "held back by the identify"
    queue.done(target, flying)
    ticks = [queue.tick() for _ in range(TICKS)]
    assert ticks == [0] * (TICKS - 1) + [1], "a flush interval from the identify's answer"
    assert queue.take() is target


def test_a_person_whose_batches_all_fly_is_not_forgotten() -> None:
    queue = Queue()
    _fill(queue, A, 2 * MAX_PER_KIND)
    target = queue.targets["profile_id"][A]
    (first, second) = _send_all(queue)
    queue.done(target, second)
    assert queue.seal(target) is None, "nothing left to send (as after a spool's cut)"
    assert queue.targets["profile_id"] == {A: target}, "its batch in flight keeps it"
    queue.done(target, first)
    assert queue.targets["profile_id"] == {}


def test_a_split_batch_keeps_the_flush_that_waits_for_it() -> None:
    queue = Queue()
    _fill(queue, A, MAX_PER_KIND)
    target = queue.targets["profile_id"][A]
    (batch,) = _send_all(queue)
    flag = _Flag()
    waiter = Waiter(flag)
    waiter.add(batch)
    target.split(batch)
    assert batch.waiters == [waiter]
    assert waiter.left == 2, "both halves"
