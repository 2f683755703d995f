"""Backfills: read calls from JSONL or CSV, one at a time, with each line's bytes.

A JSONL line is one call: ``{"kind": "track", "event": "Signed Up", "email": "…",
"properties": {…}}``, where ``kind`` names one of the client's calls
(:data:`koala_async.backfill.CALLS`) and the other keys are that call's arguments. Keys that
start with ``_`` are ignored (the dead letters of earlier versions carried ``_error``).

Every line read comes with its number, its bytes as they are in the file, and the offset
where the next line starts: the importer writes the bytes of a line it cannot deliver to
the dead letters unchanged, and checkpoints by offset. A line without a ``message_id`` gets
:func:`koala_async.backfill.line_id` (its number and bytes).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import msgspec

from .. import KoalaError
from ..backfill import CALLS, line_id

__all__ = [
    "Call",
    "Column",
    "Line",
    "Source",
    "calls_from_jsonl",
    "csv_source",
    "jsonl_source",
    "parse",
    "parse_map",
]

_PARAMETERS = {name: frozenset(call.parameters) for name, call in CALLS.items()}
_KINDS = ", ".join(CALLS)
_decode = msgspec.json.decode

Line = tuple[int, bytes, str, "dict[str, Any]", "str | None"]
"""One line read: its number, its bytes, the call's kind, its arguments, and why it is bad
(None if it is not)."""


def parse(record: object, number: int, raw: bytes) -> tuple[str, dict[str, Any], str | None]:
    """Check one decoded record's shape (not its values): its kind, arguments, and error."""
    if type(record) is not dict:
        return "", {}, "a line must be a JSON object"
    kind = record.pop("kind", None)
    parameters = _PARAMETERS.get(kind) if type(kind) is str else None
    if parameters is None:
        return str(kind), record, f"kind must be one of {_KINDS}, got {kind!r}"
    assert isinstance(kind, str)
    if not parameters.issuperset(record):
        for name in [name for name in record if str(name).startswith("_")]:
            del record[name]
        unknown = sorted(str(name) for name in record if name not in parameters)
        if unknown:
            return kind, record, f"{kind} takes no {', '.join(unknown)}"
    if record.get("message_id") is None:
        record["message_id"] = line_id(number, raw)
    return kind, record, None


class Source:
    """A file's lines as :data:`Line` tuples, from line ``start`` on.

    Attributes:
        offset: Where the line after the last one yielded starts, in bytes.
        header: A CSV's header line as it is in the file (b"" for JSONL): a file of dead
            letters starts with it.
    """

    def __init__(self, lines: Callable[[Source], Iterator[Line]], offset: int) -> None:
        self.offset = offset
        self.header = b""
        self._lines = lines

    def __iter__(self) -> Iterator[Line]:
        return self._lines(self)


def jsonl_source(file: BinaryIO, start: int = 1, offset: int = 0) -> Source:
    """Read JSONL from ``file``, a binary file positioned at ``offset``, where line
    ``start`` begins (a checkpoint seeks there; otherwise the lines before are skipped)."""

    def lines(source: Source) -> Iterator[Line]:
        at = offset
        for number, raw in enumerate(file, 1 if offset == 0 else start):
            at += len(raw)
            source.offset = at
            if number < start:
                continue
            try:
                record = _decode(raw)
            except msgspec.DecodeError as exc:
                if raw.strip():  # blank lines are skipped
                    yield number, raw, "", {}, f"not JSON: {exc}"
                continue
            kind, kwargs, error = parse(record, number, raw)
            yield number, raw, kind, kwargs, error

    return Source(lines, offset)


@dataclass(frozen=True)
class Call:
    """One call read from a file: its line number, kind and arguments (or why it is bad)."""

    line: int
    kind: str
    kwargs: dict[str, Any]
    error: str | None = None


def calls_from_jsonl(lines: Iterable[str | bytes], start: int = 1) -> Iterator[Call]:
    """The calls of JSONL ``lines`` (text or bytes), as :class:`Call` objects: the slow,
    convenient form of :func:`jsonl_source`, for tests and tools."""
    encoded = (line if isinstance(line, bytes) else line.encode() for line in lines)
    for number, _raw, kind, kwargs, error in jsonl_source(encoded, start):  # type: ignore[arg-type]
        yield Call(number, kind, kwargs, error)


def _bool(text: str) -> bool:
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    try:
        return value[text.strip().lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not a bool (true/false, 1/0, yes/no)") from None


_TYPES: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": _bool,
    "json": _decode,
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
        except (ValueError, msgspec.DecodeError) as exc:
            raise ValueError(f"column {self.column!r} as {self.type}: {exc}") from None


def parse_map(maps: Sequence[str], kind: str | None, header: Sequence[str]) -> list[Column]:
    """Check the ``--map`` options against the call and the CSV header, before any row.

    Raises:
        KoalaError: a malformed option, a field the call does not take, a column the file
            does not have, or no kind for the rows.
    """
    if kind is None and "kind" not in header:
        raise KoalaError(f"CSV: pass --kind ({_KINDS}) or give the file a kind column")
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


def csv_source(
    file: BinaryIO, kind: str | None, maps: Sequence[str], start: int = 1, offset: int = 0
) -> Source:
    """Read CSV rows from ``file`` (binary, at its start), from row ``start`` on (the header
    is row 1; ``offset``, if not 0, is where row ``start`` begins: the rows before are not
    read).

    ``maps`` are ``--map FIELD=COLUMN[:TYPE]`` options: ``properties.X`` and ``traits.X`` fill
    one key of those dicts; TYPE (str, int, float, bool, json) converts the text. Empty cells
    are skipped. The options are checked against the header before the first row is read.
    A row's bytes are the lines it spans in the file, its line ending included.
    """
    if kind is not None and kind not in CALLS:
        raise KoalaError(f"--kind must be one of {_KINDS}, got {kind!r}")
    taken: list[bytes] = []

    def text() -> Iterator[str]:
        for raw in file:
            taken.append(raw)
            yield raw.decode("utf-8", "replace")

    reader = csv.reader(text())
    header = next(reader, [])
    columns = parse_map(maps, kind, header)
    index = {name: i for i, name in enumerate(header)}
    where = [(index[c.column], *c.field.partition(".")[::2], c) for c in columns]
    kind_at = index.get("kind", -1)
    head = b"".join(taken)
    taken.clear()
    if offset:
        file.seek(offset)

    def lines(source: Source) -> Iterator[Line]:
        at = offset or len(head)
        for number, row in enumerate(reader, start if offset else 2):
            raw = b"".join(taken)
            taken.clear()
            at += len(raw)
            source.offset = at
            if number < start:
                continue
            name = kind or (row[kind_at] if 0 <= kind_at < len(row) else None)
            record: dict[str, Any] = {"kind": name}
            try:
                for i, group, key, column in where:
                    cell = row[i] if i < len(row) else ""
                    if cell == "":
                        continue
                    if key:
                        record.setdefault(group, {})[key] = column.value(cell)
                    else:
                        record[group] = column.value(cell)
            except ValueError as exc:
                yield number, raw, str(name), {}, str(exc)
                continue
            yield number, raw, *parse(record, number, raw)

    source = Source(lines, offset or len(head))
    source.header = head
    return source
