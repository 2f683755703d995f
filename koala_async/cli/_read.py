"""Backfills: read calls from JSONL or CSV, one at a time, and turn failures into dead letters.

A JSONL line is one call: ``{"kind": "track", "event": "Signed Up", "email": "…",
"properties": {…}}``, where ``kind`` is ``track``, ``identify``, ``page``,
``account_identify`` or ``account_track`` and the other keys are that call's arguments. A
dead letter is the same line plus ``"_error"``, so a dead-letter file imports as it is.
Lines without a ``message_id`` get one derived from their content, so importing a file
twice never duplicates an event at Koala.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .._exceptions import ValidationError
from .._stats import DeliveryFailure

__all__ = ["KINDS", "Call", "calls_from_csv", "calls_from_jsonl", "dead_letters"]

KINDS = {
    "track": {"event", "profile_id", "email", "properties", "message_id", "sent_at"},
    "identify": {"profile_id", "email", "traits", "message_id", "sent_at"},
    "page": {"profile_id", "email", "name", "properties", "message_id", "sent_at"},
    "account_identify": {"domain", "account_id", "traits", "group_id", "message_id", "sent_at"},
    "account_track": {"event", "domain", "account_id", "properties", "message_id", "sent_at"},
}
_IDEMPOTENT = {"track", "page", "account_track"}  # the kinds Koala dedupes by message_id
_NAMESPACE = uuid.UUID("5b0b7b8e-8a2e-4d5e-9a51-6f3b1c7d2e10")


@dataclass(frozen=True)
class Call:
    """One call read from a file: its line number, kind and arguments (or why it is bad)."""

    line: int
    kind: str
    kwargs: dict[str, Any]
    error: str | None = None


def parse(record: object, line: int) -> Call:
    """Turn one decoded record into a :class:`Call`, checking its shape (not its values)."""
    if not isinstance(record, dict):
        return Call(line, "", {}, "a line must be a JSON object")
    fields = {k: v for k, v in record.items() if not str(k).startswith("_")}
    kind = fields.pop("kind", None)
    if kind not in KINDS:
        return Call(
            line, str(kind), fields, f"kind must be one of {', '.join(KINDS)}, got {kind!r}"
        )
    unknown = set(fields) - KINDS[kind]
    if unknown:
        return Call(line, kind, fields, f"{kind} takes no {', '.join(sorted(unknown))}")
    if kind in _IDEMPOTENT and fields.get("message_id") is None:
        canonical = json.dumps({"kind": kind, **fields}, sort_keys=True, default=str)
        fields["message_id"] = str(uuid.uuid5(_NAMESPACE, canonical))
    return Call(line, kind, fields)


def calls_from_jsonl(file: Iterable[str], start: int = 1) -> Iterator[Call]:
    """Read calls from JSONL, one line at a time, from line ``start`` on; blank lines are
    skipped."""
    for number, text in enumerate(file, 1):
        if number < start or not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Call(number, "", {"_text": text.rstrip("\n")}, f"not JSON: {exc}")
            continue
        yield parse(record, number)


def calls_from_csv(
    file: Iterable[str], kind: str | None, mapping: dict[str, str], start: int = 1
) -> Iterator[Call]:
    """Read calls from CSV, from row ``start`` on (the header is row 1). ``mapping`` maps a
    call's argument to a column name; ``properties.X`` and ``traits.X`` fill one key of
    those dicts. Empty cells are skipped."""
    if kind is not None and kind not in KINDS:
        raise ValidationError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    for number, row in enumerate(csv.DictReader(file), 2):
        if number < start:
            continue
        record: dict[str, Any] = {"kind": kind or row.get("kind")}
        for field, column in mapping.items():
            value = row.get(column)
            if value in (None, ""):
                continue
            group, _, key = field.partition(".")
            if key:
                record.setdefault(group, {})[key] = value
            else:
                record[field] = value
        yield parse(record, number)


def dead_letters(failure: DeliveryFailure) -> Iterator[dict[str, Any]]:
    """Turn a batch the client gave up on back into importable lines, with the reason."""
    error: str = failure.reason
    if failure.status is not None:
        error += f" (HTTP {failure.status})"
    elif failure.exception is not None:
        error += f" ({type(failure.exception).__name__}: {failure.exception})"
    for entry in failure.entries:
        kind = entry["type"]
        if failure.kind == "account":
            kind = "account_identify" if kind == "identify" else "account_track"
        line = {"kind": kind, **failure.ids}
        line.update((k, v) for k, v in entry.items() if k != "type")
        yield {**line, "_error": error}
