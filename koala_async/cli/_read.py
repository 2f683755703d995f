"""Backfills: read calls from JSONL or CSV, one at a time, and turn failures into dead letters.

A JSONL line is one call: ``{"kind": "track", "event": "Signed Up", "email": "…",
"properties": {…}}``, where ``kind`` names one of the client's calls (``_calls.CALLS``) and
the other keys are that call's arguments. A dead letter is the same line plus ``"_error"``,
so a dead-letter file imports as it is.

A line without a ``message_id`` gets one derived from its content *and* its line number:
importing the same file again sends the same ids (Koala drops the repeats), while two
identical lines, such as the same event at two moments without a timestamp, stay two events.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .._calls import CALLS
from .._exceptions import KoalaError
from .._stats import DeliveryFailure

__all__ = ["Call", "Column", "calls_from_csv", "calls_from_jsonl", "dead_letters", "parse_map"]

_NAMESPACE = uuid.UUID("5b0b7b8e-8a2e-4d5e-9a51-6f3b1c7d2e10")


@dataclass(frozen=True)
class Call:
    """One call read from a file: its line number, kind and arguments (or why it is bad)."""

    line: int
    kind: str
    kwargs: dict[str, Any]
    error: str | None = None


def message_id(kind: str, fields: dict[str, Any], line: int) -> str:
    """A message_id for a line that has none: the same for the same content on the same line."""
    canonical = json.dumps({"kind": kind, **fields}, sort_keys=True, default=str)
    return str(uuid.uuid5(_NAMESPACE, f"{line}\n{canonical}"))


def parse(record: object, line: int) -> Call:
    """Turn one decoded record into a :class:`Call`, checking its shape (not its values)."""
    if not isinstance(record, dict):
        return Call(line, "", {}, "a line must be a JSON object")
    fields = {k: v for k, v in record.items() if not str(k).startswith("_")}
    kind = fields.pop("kind", None)
    call = CALLS.get(kind) if isinstance(kind, str) else None
    if call is None:
        return Call(
            line, str(kind), fields, f"kind must be one of {', '.join(CALLS)}, got {kind!r}"
        )
    unknown = set(fields) - set(call.parameters)
    if unknown:
        return Call(line, call.name, fields, f"{call.name} takes no {', '.join(sorted(unknown))}")
    if fields.get("message_id") is None:
        fields["message_id"] = message_id(call.name, fields, line)
    return Call(line, call.name, fields)


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


def _bool(text: str) -> bool:
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    try:
        return value[text.strip().lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not a bool (true/false, 1/0, yes/no)") from None


def _json(text: str) -> Any:
    return json.loads(text)


_TYPES: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": _bool,
    "json": _json,
}


@dataclass(frozen=True)
class Column:
    """One ``--map FIELD=COLUMN[:TYPE]``: which argument a CSV column fills, and how."""

    field: str
    column: str
    type: str = "str"

    def value(self, text: str) -> Any:
        try:
            return _TYPES[self.type](text)
        except ValueError as exc:
            raise ValueError(f"column {self.column!r} as {self.type}: {exc}") from None


def parse_map(maps: Sequence[str], kind: str | None, header: Sequence[str]) -> list[Column]:
    """Check the ``--map`` options against the call and the CSV header, before any row.

    Raises:
        KoalaError: a malformed option, a field the call does not take, a column the file
            does not have, or no kind for the rows.
    """
    if kind is None and "kind" not in header:
        raise KoalaError(f"CSV: pass --kind ({', '.join(CALLS)}) or give the file a kind column")
    call = CALLS.get(kind) if kind is not None else None
    columns = []
    for option in maps:
        field, sep, source = option.partition("=")
        column, colon, type_name = source.rpartition(":")
        if not colon or type_name not in _TYPES:  # no type, or a colon in the column's name
            column, type_name = source, "str"
        if not sep or not field or not column:
            raise KoalaError(
                f"--map takes FIELD=COLUMN[:TYPE] (e.g. traits.seats=seats:int), got {option!r}"
            )
        if column not in header:
            raise KoalaError(
                f"--map {option}: the file has no column {column!r} (it has {', '.join(header)})"
            )
        group, dot, _ = field.partition(".")
        if call is not None:
            takes = group == call.payload if dot else field in call.parameters
            if not takes:
                raise KoalaError(
                    f"--map {option}: {call.name} takes {', '.join(call.parameters)}, "
                    f"and {call.payload}.X for one key of {call.payload}"
                )
        columns.append(Column(field, column, type_name))
    return columns


def calls_from_csv(
    file: Iterable[str], kind: str | None, maps: Sequence[str], start: int = 1
) -> Iterator[Call]:
    """Read calls from CSV, from row ``start`` on (the header is row 1).

    ``maps`` are ``--map FIELD=COLUMN[:TYPE]`` options: ``properties.X`` and ``traits.X`` fill
    one key of those dicts; TYPE (str, int, float, bool, json) converts the text. Empty cells
    are skipped. The options are checked against the header before the first row is read.
    """
    if kind is not None and kind not in CALLS:
        raise KoalaError(f"--kind must be one of {', '.join(CALLS)}, got {kind!r}")
    reader = csv.DictReader(file)
    columns = parse_map(maps, kind, reader.fieldnames or [])
    return _rows(reader, kind, columns, start)


def _rows(
    reader: csv.DictReader[str], kind: str | None, columns: list[Column], start: int
) -> Iterator[Call]:
    for number, row in enumerate(reader, 2):
        if number < start:
            continue
        record: dict[str, Any] = {"kind": kind or row.get("kind")}
        try:
            for column in columns:
                text = row.get(column.column)
                if text in (None, ""):
                    continue
                group, _, name = column.field.partition(".")
                if name:
                    record.setdefault(group, {})[name] = column.value(text)
                else:
                    record[column.field] = column.value(text)
        except ValueError as exc:
            yield Call(number, str(record["kind"]), {"_row": row}, str(exc))
            continue
        yield parse(record, number)


def dead_letters(failure: DeliveryFailure, error: str | None = None) -> Iterator[dict[str, Any]]:
    """Turn a batch the client gave up on back into importable lines, with the reason (or
    ``error``, when the caller knows better)."""
    if error is None:
        error = failure.reason
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
