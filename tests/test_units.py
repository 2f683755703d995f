"""The pure parts: ids, timestamps, batch cutting, body stitching, retry decisions."""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from wire_check import PROFILE, is_uuid4

from koala_async import RetryPolicy, _wire
from koala_async._batch import EVENTS, IDENTIFIES, PAGE_VIEWS, Target
from koala_async._retry import Verdict, classify, retry_after
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


def _target() -> Target:
    return Target(("profile_id", PID), "email", account=False)


def test_a_batch_holds_at_most_30_of_each_kind() -> None:
    target = _target()
    full = [
        target.add(EVENTS, b'{"type":"track","event":"e","message_id":"m"}', None)
        for _ in range(65)
    ]
    assert full.count(True) == 2
    assert full[29]
    assert full[59]
    for _ in range(3):
        target.add(IDENTIFIES, b'{"type":"identify"}', None)
    sizes = [batch.counts for batch in target.batches]
    assert sizes == [[30, 0, 0], [30, 0, 0], [5, 3, 0]]


def test_a_sealed_batch_takes_no_more_entries() -> None:
    target = _target()
    target.add(PAGE_VIEWS, b"{}", None)
    assert target.seal() is target.batches[0]
    target.add(PAGE_VIEWS, b"{}", None)
    assert [b.size for b in target.batches] == [1, 1]


def test_a_different_email_starts_a_new_batch() -> None:
    target = _target()
    target.add(EVENTS, b"{}", None)
    target.add(EVENTS, b"{}", "a@x.io")
    target.add(EVENTS, b"{}", None)
    target.add(EVENTS, b"{}", "b@x.io")
    assert [(b.size, b.secondary) for b in target.batches] == [(3, "a@x.io"), (1, "b@x.io")]


def test_body_is_valid_json_that_matches_the_spec() -> None:
    target = _target()
    event = json.dumps(
        {"type": "track", "event": "E", "message_id": "m", "sent_at": "2024-01-01T00:00:00.000Z"}
    ).encode()
    target.add(EVENTS, event, "ada@acme.com")
    target.add(IDENTIFIES, b'{"type":"identify","traits":{"a":1}}', None)
    body = json.loads(target.body(target.batches[0]))
    PROFILE.validate(body)
    assert body == {
        "profile_id": PID,
        "email": "ada@acme.com",
        "events": [json.loads(event)],
        "identifies": [{"type": "identify", "traits": {"a": 1}}],
    }


def test_halves_split_by_count_and_keep_order() -> None:
    target = _target()
    for i in range(3):
        target.add(EVENTS, str(i).encode(), "a@x.io")
    target.add(IDENTIFIES, b"9", None)
    first, second = target.batches[0].halves()
    assert (first.entries(), second.entries()) == ([(0, b"0"), (0, b"1")], [(0, b"2"), (1, b"9")])
    assert first.secondary == second.secondary == "a@x.io"
    assert first.size + second.size == 4


@pytest.mark.parametrize(
    ("status", "content", "verdict"),
    [
        (200, b"", Verdict.DELIVERED),
        (202, b"not json", Verdict.DELIVERED),
        (408, b"", Verdict.RETRY),
        (429, b"", Verdict.RATE_LIMITED),
        (500, b"", Verdict.RETRY),
        (503, b"", Verdict.RETRY),
        (501, b"", Verdict.REJECTED),
        (505, b"", Verdict.REJECTED),
        (413, b"", Verdict.TOO_LARGE),
        (401, b"", Verdict.UNAUTHORIZED),
        (400, b'{"error": "Koala ingest suspended"}', Verdict.SUSPENDED),
        (400, b'{"error": "bad email"}', Verdict.REJECTED),
        (404, b"", Verdict.REJECTED),
    ],
)
def test_classify(status: int, content: bytes, verdict: Verdict) -> None:
    assert classify(status, content) is verdict


def test_retry_after_reads_seconds_and_dates_and_caps_them() -> None:
    assert retry_after("3", 60) == 3
    assert retry_after("1000", 60) == 60
    assert retry_after("-5", 60) == 0
    assert retry_after(None, 60) is None
    assert retry_after("soon", 60) is None
    later = format_datetime(datetime.fromtimestamp(time.time() + 30, timezone.utc), usegmt=True)
    seconds = retry_after(later, 60)
    assert seconds is not None
    assert 25 <= seconds <= 30


def test_retry_waits_grow_with_full_jitter_and_a_cap() -> None:
    caps = [1, 2, 4, 8, 8, 8, 8, 8, 8, 8]
    policy = RetryPolicy(backoff=1.0, max_backoff=8.0)
    runs = [list(itertools.islice(policy.waits(), len(caps))) for _ in range(200)]
    for attempt, cap in enumerate(caps):
        drawn = [run[attempt] for run in runs]
        assert all(0 <= w <= cap for w in drawn)
        # Full jitter: spread over [0, cap], so 200 draws reach past its middle and below it;
        # constant or un-grown waits would not.
        assert min(drawn) < cap / 2 < max(drawn), (attempt, cap)
    assert [next(RetryPolicy(backoff=0).waits()) for _ in range(3)] == [0, 0, 0]


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(budget=-1)


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
