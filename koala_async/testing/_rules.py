"""Koala's rules for a request body, as the fake collector checks them.

This is the collector's own copy of the rules, written from Koala's OpenAPI schemas
(``ProfileBatchRequest``, ``AccountBatchRequest``) and its guide, on purpose not imported
from the client: a checker that shared the client's constants would agree with any mistake
in them. Checking is pure (no I/O) and reports every problem of a body, not the first one.

Beyond the spec's listed fields, the spec allows extra properties, and Koala's own
integrations (Segment's, RudderStack's) send some: a top-level ``ip`` (the visitor's IP) and
``traits`` on ``/batch``, a ``context`` object on each entry, a ``message_id`` on identifies.
Those are checked for their type and kept; anything else extra is left alone.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

__all__ = ["MAX_PER_KIND", "SENT_AT", "UUID", "check_body", "is_sent_at"]

MAX_PER_KIND = 30
"""Entries of one kind (events, identifies, page views) Koala takes in one request."""
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
"""The spec's ``format: uuid`` for ``profile_id``, in any case."""
SENT_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
"""The form of every ``sent_at`` in Koala's docs: UTC, milliseconds, ``Z``."""
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+\Z")

# Which entry type each array holds, per endpoint.
_PROFILE_ARRAYS = {"events": "track", "identifies": "identify", "page_views": "page"}
_ACCOUNT_ARRAYS = {"events": "track", "identifies": "identify"}
# The optional fields of each entry type, and the JSON type each must have.
_FIELDS: dict[str, dict[str, type]] = {
    "track": {"message_id": str, "properties": dict, "sent_at": str, "context": dict},
    "identify": {"message_id": str, "traits": dict, "sent_at": str, "context": dict},
    "page": {"message_id": str, "name": str, "properties": dict, "sent_at": str, "context": dict},
}
_JSON_NAMES: dict[type, str] = {str: "a string", dict: "an object"}

Entries = list[tuple[str, dict[str, Any]]]
"""The entries of a body, each as (its array, the entry)."""


def is_sent_at(value: str) -> bool:
    """Whether ``value`` is a real UTC time in Koala's form, like ``2022-11-09T23:57:14.776Z``."""
    if not SENT_AT.match(value):
        return False
    try:
        datetime.fromisoformat(value[:-1])  # a real date and time, not 2024-02-30
    except ValueError:
        return False
    return True


def check_body(
    kind: Literal["profile", "account"], body: dict[str, Any]
) -> tuple[list[str], dict[str, str | None], Entries]:
    """Check a parsed body against Koala's rules.

    Returns:
        Every problem found (empty if the body is valid), the body's id fields, and its
        entries.
    """
    problems: list[str] = []
    spec = "body does not match the spec: "
    if kind == "profile":
        ids = _ids(body, ("profile_id", "email"), problems)
        if ids["profile_id"] is None and ids["email"] is None:
            problems.append("neither profile_id nor email: Koala needs one of them")
        if ids["profile_id"] is not None and not UUID.match(ids["profile_id"]):
            problems.append(f"profile_id {ids['profile_id']!r} is not a UUID")
        if ids["email"] is not None and not _EMAIL.match(ids["email"]):
            problems.append(f"email {ids['email']!r} is not an address")
        if "ip" in body and not isinstance(body["ip"], str):
            problems.append(spec + "ip must be a string")
        if "traits" in body and not isinstance(body["traits"], dict):
            problems.append(spec + "traits must be an object")
        arrays = _PROFILE_ARRAYS
    else:
        ids = _ids(body, ("domain", "account_id"), problems)
        if ids["domain"] is None and ids["account_id"] is None:
            problems.append("neither domain nor account_id: Koala needs one of them")
        arrays = _ACCOUNT_ARRAYS
    entries: Entries = []
    for array, entry_type in arrays.items():
        items = body.get(array, [])
        if not isinstance(items, list):
            problems.append(spec + f"{array} must be an array")
            continue
        if len(items) > MAX_PER_KIND:
            problems.append(
                spec + f"{array} holds {len(items)} entries; Koala takes at most {MAX_PER_KIND}"
            )
        for index, item in enumerate(items):
            where = f"{array}[{index}]"
            if _entry_problems(item, entry_type, where, problems):
                entries.append((array, item))
    return problems, ids, entries


def _ids(
    body: dict[str, Any], names: tuple[str, str], problems: list[str]
) -> dict[str, str | None]:
    ids: dict[str, str | None] = {}
    for name in names:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            problems.append(f"body does not match the spec: {name} must be a string")
            value = None
        ids[name] = value
    return ids


def _entry_problems(item: object, entry_type: str, where: str, problems: list[str]) -> bool:
    """Add the problems of one entry to ``problems``; return whether it is an entry at all."""
    spec = f"body does not match the spec: {where}"
    if not isinstance(item, dict):
        problems.append(f"{spec} must be an object")
        return False
    if item.get("type") != entry_type:
        problems.append(f"{spec}.type must be {entry_type!r}, got {item.get('type')!r}")
    if entry_type == "track":
        event = item.get("event")
        if not isinstance(event, str) or not event:
            problems.append(f"{spec}.event must be a non-empty string, got {event!r}")
    for name, expected in _FIELDS[entry_type].items():
        value = item.get(name)
        if value is not None and not isinstance(value, expected):
            problems.append(f"{spec}.{name} must be {_JSON_NAMES[expected]}")
    sent_at = item.get("sent_at")
    if isinstance(sent_at, str) and not is_sent_at(sent_at):
        problems.append(
            f"{where}: sent_at {sent_at!r} is not an ISO 8601 UTC time with milliseconds, "
            "like '2022-11-09T23:57:14.776Z'"
        )
    return True
