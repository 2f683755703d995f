"""The pure parts: ids, timestamps, batch cutting, body stitching (decisions: test_decisions)."""

from __future__ import annotations

import json
import os
import random
import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from wire_check import PROFILE, is_uuid4

from koala_async import _wire
from koala_async._queue import EVENTS, IDENTIFIES, PAGE_VIEWS, TICKS, Queue, Target
from koala_async._validate import normalize_domain
from koala_async._wire import new_message_id, now_iso

PID = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"


def test_message_ids_are_uuid4_and_unique() -> None:
    ids = [new_message_id() for _ in range(20_000)]
    assert all(is_uuid4(i) for i in ids)
    assert len(set(ids)) == len(ids)
    for at in range(36):  # every random digit takes every value it may: none is left fixed
        seen = {i[at] for i in ids}
        if at in (8, 13, 18, 23):
            assert seen == {"-"}
        elif at == 14:
            assert seen == {"4"}
        elif at == 19:
            assert seen == set("89ab")
        else:
            assert seen == set("0123456789abcdef"), at
    assert str(uuid.UUID(ids[0])) == ids[0]


def test_message_ids_ignore_the_callers_random_seed() -> None:
    _wire._ids.clear()  # so each call below draws a fresh block
    random.seed(42)
    first = new_message_id()
    _wire._ids.clear()
    random.seed(42)
    assert new_message_id() != first


def test_now_iso_is_utc_with_milliseconds() -> None:
    before = datetime.now(timezone.utc) - timedelta(milliseconds=1)
    text = now_iso()
    after = datetime.now(timezone.utc)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
    assert before <= datetime.fromisoformat(text.replace("Z", "+00:00")) <= after


def test_now_iso_moves_on_at_each_wall_clock_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    """The text is kept for the rest of its millisecond of the wall clock, told by the
    monotonic clock, and not a moment longer."""
    clock = {"ns": 1_700_000_000_123_900_000}  # 0.1 ms before a millisecond ends
    monkeypatch.setattr(_wire, "_monotonic", lambda: clock["ns"] / 1e9)
    monkeypatch.setattr(time, "time_ns", lambda: clock["ns"])
    monkeypatch.setattr(_wire, "_millisecond", (0.0, -1.0, ""))
    first = now_iso()
    clock["ns"] += 50_000
    assert now_iso() == first
    clock["ns"] += 60_000
    assert first.endswith(".123Z")
    assert now_iso().endswith(".124Z")


def _queued(kind: int = EVENTS) -> tuple[Queue, Target]:
    queue = Queue()
    queue.put(kind, b"{}", ("profile_id", PID, "email", None))
    return queue, queue.targets["profile_id"][PID]


def _put(queue: Queue, kind: int, raw: bytes, email: str | None) -> bool:
    return queue.put(kind, raw, ("profile_id", PID, "email", email))


def test_a_batch_holds_at_most_30_of_each_kind() -> None:
    queue = Queue()
    ready = [
        _put(queue, EVENTS, b'{"type":"track","event":"e","message_id":"m"}', None)
        for _ in range(65)
    ]
    assert ready == [False] * 29 + [True] + [False] * 35  # ready once: then it is scheduled
    for _ in range(3):
        _put(queue, IDENTIFIES, b'{"type":"identify"}', None)
    target = queue.targets["profile_id"][PID]
    kinds = (EVENTS, IDENTIFIES, PAGE_VIEWS)
    sizes = [[batch.count(k) for k in kinds] for batch in target.batches()]
    assert sizes == [[30, 0, 0], [30, 0, 0], [5, 3, 0]]


def test_a_sealed_batch_takes_no_more_entries() -> None:
    queue, target = _queued(PAGE_VIEWS)
    assert target.seal() is target.head
    _put(queue, PAGE_VIEWS, b"{}", None)
    assert [b.size for b in target.batches()] == [1, 1]


def test_a_different_email_starts_a_new_batch() -> None:
    queue, target = _queued()
    _put(queue, EVENTS, b"{}", "a@x.io")
    _put(queue, EVENTS, b"{}", None)
    _put(queue, EVENTS, b"{}", "b@x.io")
    assert [(b.size, b.secondary) for b in target.batches()] == [(3, "a@x.io"), (1, "b@x.io")]


def test_a_split_in_flight_batch_keeps_the_order_and_new_entries_go_last() -> None:
    queue, target = _queued()
    _put(queue, EVENTS, b"{}", None)
    batch = target.seal()
    assert batch is not None
    _put(queue, EVENTS, b"[]", None)
    target.split(batch)
    _put(queue, EVENTS, b"1", None)
    entries = [b.entries() for b in target.batches()]
    assert entries == [[(0, b"{}")], [(0, b"{}")], [(0, b"[]"), (0, b"1")]]
    assert target.last() is target.open
    later = list(target.batches())[1:]
    assert list(target.cut()) == later
    assert [b.size for b in target.batches()] == [1]


def test_body_is_valid_json_that_matches_the_spec() -> None:
    queue = Queue()
    event = json.dumps(
        {"type": "track", "event": "E", "message_id": "m", "sent_at": "2024-01-01T00:00:00.000Z"}
    ).encode()
    _put(queue, EVENTS, event, "ada@acme.com")
    _put(queue, IDENTIFIES, b'{"type":"identify","traits":{"a":1}}', None)
    target = queue.targets["profile_id"][PID]
    assert target.head is not None
    body = json.loads(target.body(target.head))
    PROFILE.validate(body)
    assert body == {
        "profile_id": PID,
        "email": "ada@acme.com",
        "events": [json.loads(event)],
        "identifies": [{"type": "identify", "traits": {"a": 1}}],
    }


def test_halves_split_by_count_and_keep_order() -> None:
    queue = Queue()
    for i in range(3):
        _put(queue, EVENTS, str(i).encode(), "a@x.io")
    _put(queue, IDENTIFIES, b"9", None)
    head = queue.targets["profile_id"][PID].head
    assert head is not None
    first, second = head.halves()
    assert (first.entries(), second.entries()) == ([(0, b"0"), (0, b"1")], [(0, b"2"), (1, b"9")])
    assert first.secondary == second.secondary == "a@x.io"
    assert first.size + second.size == 4


def _add(queue: Queue, raw: bytes, key: str = PID) -> int:
    return queue.add(EVENTS, raw, ("profile_id", key, "email", None))


def test_the_inbox_is_filed_in_the_order_of_the_calls() -> None:
    queue = Queue()
    other = "0" * 8 + PID[8:]
    keys = [PID if i % 3 else other for i in range(45)]  # 30 for PID, 15 for the other
    assert [_add(queue, str(i).encode(), key) for i, key in enumerate(keys)] == list(range(1, 46))
    assert queue.targets["profile_id"] == {}, "nothing is filed before intake"
    assert queue.intake() == 1  # PID's 30 fill a batch: ready
    assert queue.inbox == []
    targets = queue.targets["profile_id"]
    assert queue.take() is targets[PID]
    filed = {
        key: [raw for b in t.batches() for _, raw in b.entries()] for key, t in targets.items()
    }
    assert filed == {
        key: [str(i).encode() for i, k in enumerate(keys) if k == key] for key in (PID, other)
    }


def test_a_tick_files_the_inbox_into_the_bucket_of_the_eighth_that_ended() -> None:
    queue = Queue()
    _add(queue, b"1")
    ticks = 1
    while not queue.tick():
        ticks += 1
    assert ticks == TICKS  # as if filed at the call: made in the first eighth, sent at the 8th


def test_what_reads_the_queue_files_the_inbox_first() -> None:
    queue = Queue()
    _add(queue, b"1")
    assert [batch.size for _, batch in queue.batches()] == [1]  # a flush waits for it
    queue = Queue()
    _add(queue, b"2")
    assert queue.schedule_waiting() == 1  # a flush or the close sends it
    assert queue.take() is queue.targets["profile_id"][PID]
    _add(queue, b"3")
    queue.clear()
    assert queue.inbox == []


@pytest.mark.parametrize(
    ("given", "domain"),
    [
        ("acme.com", "acme.com"),
        ("ACME.com", "acme.com"),
        ("https://www.acme.com/pricing?x=1", "acme.com"),
        ("http://user@acme.com:8080", "acme.com"),
        ("www.sub.acme.co.uk.", "sub.acme.co.uk"),
        ("bücher.de", "xn--bcher-kva.de"),
    ],
)
def test_domains_are_normalized(given: str, domain: str) -> None:
    assert normalize_domain(given) == domain


def test_a_forked_child_never_reuses_the_parents_message_ids() -> None:
    new_message_id()  # the parent now holds a block of pre-drawn ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, ",".join(new_message_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = set(os.read(read, 100_000).decode().split(","))
    os.close(read)
    parent = {new_message_id() for _ in range(100)}
    assert len(child) == 100
    assert not child & parent
