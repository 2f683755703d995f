"""FakeCollector.order_problems: the ordering rule as the collector checks it."""

from __future__ import annotations

import json

from koala_async.testing import FakeCollector

PATH = "/web/projects/pk_test/batch"
HEADERS = {"user-agent": "t/1", "content-type": "application/json"}


def _entry(kind: str, mid: str, ms: int) -> dict[str, object]:
    sent_at = f"2026-12-06T00:00:00.{ms:03d}Z"
    if kind == "identify":
        return {"type": "identify", "traits": {}, "message_id": mid, "sent_at": sent_at}
    return {"type": "track", "event": "E", "message_id": mid, "sent_at": sent_at}


def _send(fake: FakeCollector, *entries: dict[str, object]) -> None:
    body = {"email": "a@acme.com", "events": [], "identifies": []}
    for entry in entries:
        body["events" if entry["type"] == "track" else "identifies"].append(entry)  # type: ignore[attr-defined]
    body = {k: v for k, v in body.items() if v}
    assert fake.handle("POST", PATH, HEADERS, json.dumps(body).encode()).status == 200


def test_events_between_identifies_may_arrive_in_any_order() -> None:
    fake = FakeCollector()
    _send(fake, _entry("track", "e2", 2))
    _send(fake, _entry("track", "e1", 1), _entry("identify", "i3", 3))
    _send(fake, _entry("track", "e5", 5))
    _send(fake, _entry("track", "e4", 4))
    assert fake.order_problems() == []


def test_an_event_made_before_an_identify_must_not_arrive_after_it() -> None:
    fake = FakeCollector()
    _send(fake, _entry("identify", "i3", 3))
    _send(fake, _entry("track", "e1", 1))
    problems = fake.order_problems()
    assert len(problems) == 1
    assert "e1" in problems[0]
    assert "i3" in problems[0]


def test_an_entry_made_after_an_identify_must_not_arrive_before_it() -> None:
    fake = FakeCollector()
    _send(fake, _entry("track", "e5", 5))
    _send(fake, _entry("identify", "i3", 3))
    assert len(fake.order_problems()) == 1


def test_a_resent_entry_is_judged_where_it_first_arrived() -> None:
    fake = FakeCollector()
    _send(fake, _entry("track", "e1", 1))
    _send(fake, _entry("identify", "i3", 3))
    _send(fake, _entry("track", "e1", 1))  # at least once: a repeat is dropped by Koala
    assert fake.order_problems() == []
