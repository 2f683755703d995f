"""Property-style tests: any input is accepted and delivered or refused at the call, and under
random faults every event reaches exactly one outcome."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_check import check_request

from koala_async import DeliveryFailure, KoalaClient, KoalaError, RetryPolicy

pytestmark = pytest.mark.anyio

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
odd_values = st.sampled_from([object(), {1, 2}, b"bytes", 2**70, float("nan"), datetime.now()])
values = st.recursive(
    json_scalars | odd_values,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
mappings = (
    st.none()
    | st.dictionaries(st.text(max_size=6) | st.integers(), values, max_size=4)
    | st.sampled_from([[], "x", 3])
)
uuids = st.uuids().map(str)
profile_ids = st.none() | uuids | uuids.map(str.upper) | st.text(max_size=40) | st.integers()
emails = st.none() | st.emails() | st.text(max_size=12) | st.just("a@b.co")
names = st.none() | st.text(max_size=10) | st.integers()
domains = (
    st.none()
    | st.sampled_from(["acme.com", "https://www.acme.com/x", "bücher.de", "nope"])
    | st.text(max_size=10)
)
offsets = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)
sent_ats = (
    st.none()
    | st.datetimes()
    | st.datetimes(timezones=offsets)
    | st.text(max_size=25)
    | st.integers()
)
message_ids = st.none() | st.text(max_size=10) | st.integers()

calls = st.one_of(
    st.tuples(
        st.just("track"),
        st.fixed_dictionaries(
            {
                "event": names,
                "profile_id": profile_ids,
                "email": emails,
                "properties": mappings,
                "message_id": message_ids,
                "sent_at": sent_ats,
            }
        ),
    ),
    st.tuples(
        st.just("identify"),
        st.fixed_dictionaries(
            {
                "profile_id": profile_ids,
                "email": emails,
                "traits": mappings,
                "message_id": message_ids,
                "sent_at": sent_ats,
            }
        ),
    ),
    st.tuples(
        st.just("page"),
        st.fixed_dictionaries(
            {
                "profile_id": profile_ids,
                "email": emails,
                "name": names,
                "properties": mappings,
                "sent_at": sent_ats,
            }
        ),
    ),
    st.tuples(
        st.just("account_identify"),
        st.fixed_dictionaries(
            {
                "domain": domains,
                "account_id": names,
                "traits": mappings,
                "group_id": names,
                "sent_at": sent_ats,
            }
        ),
    ),
    st.tuples(
        st.just("account_track"),
        st.fixed_dictionaries(
            {
                "event": names,
                "domain": domains,
                "account_id": names,
                "properties": mappings,
                "sent_at": sent_ats,
            }
        ),
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(calls, min_size=1, max_size=12))
async def test_any_input_is_delivered_or_refused_at_the_call(
    batch: list[tuple[str, dict[str, Any]]],
) -> None:
    received: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(check_request(request))
        return httpx.Response(200)

    accepted = 0
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http,
        KoalaClient(
            "pk_test", http_client=http, retry=RetryPolicy(max_attempts=1), strict=True
        ) as koala,
    ):
        for method, kwargs in batch:
            try:
                await getattr(koala, method)(**kwargs)
            except KoalaError:
                continue
            accepted += 1
    stats = koala.stats()
    assert stats.accepted == accepted
    assert stats.delivered == accepted, stats  # a spec violation would show as a drop
    entries = sum(
        len(b.get(k, [])) for b in received for k in ("events", "identifies", "page_views")
    )
    assert entries == accepted


class Chaos:
    """Answers each request with a random fault, decided before the request is processed."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.delivered: Counter[str] = Counter()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = check_request(request)
        roll = self.random.random()
        if roll < 0.08:
            raise httpx.ConnectError("refused", request=request)
        if roll < 0.12:
            raise httpx.ReadTimeout("slow", request=request)
        if roll < 0.22:
            return httpx.Response(self.random.choice([500, 502, 503, 504, 408]))
        if roll < 0.26:
            return httpx.Response(429, headers={"Retry-After": "0"})
        if roll < 0.30 and len(request.content) > 400:
            return httpx.Response(413)
        if roll < 0.32:
            return httpx.Response(400, json={"error": "bad"})
        for kind in ("events", "identifies", "page_views"):
            for entry in body.get(kind, []):
                self.delivered[entry["message_id"]] += 1
        return httpx.Response(200)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_faults_every_event_reaches_exactly_one_outcome(seed: int) -> None:
    chaos = Chaos(seed)
    failures: list[DeliveryFailure] = []
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(chaos)) as http,
        KoalaClient(
            "pk_test",
            http_client=http,
            retry=RetryPolicy(backoff=0, max_attempts=4),
            on_error=failures.append,
            flush_interval=0.005,
        ) as koala,
    ):
        sent = []
        rng = random.Random(seed)
        for i in range(3000):
            person = f"p{rng.randrange(200)}@acme.com"
            if i % 3 == 0:
                sent.append(await koala.page(email=person, properties={"i": i}))
            else:
                sent.append(await koala.track("Step", email=person, properties={"i": i}))
            if i % 500 == 0:
                await anyio.lowlevel.checkpoint()
    dropped = Counter(e["message_id"] for f in failures for e in f.entries)
    stats = koala.stats()
    assert set(chaos.delivered) | set(dropped) == set(sent)
    assert not set(chaos.delivered) & set(dropped), "an entry is delivered or dropped, not both"
    assert max(chaos.delivered.values()) == 1, "no duplicates"
    assert max(dropped.values(), default=1) == 1
    assert stats.delivered == len(chaos.delivered)
    assert stats.dropped_total == len(dropped)
    assert stats.pending == 0
    assert stats.accepted == len(sent) == stats.delivered + stats.dropped_total
    assert {f.reason for f in failures} <= {"rejected", "too_large", "retries_exhausted"}
    # Each reason's counter is the number of entries on_error heard of for that reason.
    by_reason = Counter(f.reason for f in failures for _ in f.entries)
    assert {reason: n for reason, n in stats.dropped.items() if n} == by_reason
