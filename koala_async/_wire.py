"""The wire format: entries encoded once at the call, and request bodies stitched from them.

An entry is encoded to JSON bytes the moment a caller makes it, so later changes to the
caller's dicts cannot reach Koala and the flusher never encodes anything twice: a request
body is the person's id fields followed by the already-encoded entries, joined with commas.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec

from ._fork import in_child

__all__ = ["MAX_PER_KIND", "Entry", "encode", "new_message_id", "now_iso", "top_up"]

MAX_PER_KIND = 30
"""Koala accepts at most this many of each kind of entry in one request."""


def convert(value: Any) -> Any:
    """The one JSON form of a value msgspec does not encode itself: a pydantic model's
    ``model_dump(mode="json")``, a numpy scalar's Python number (``.item()``). Anything
    else is refused (TypeError), as :func:`._validate.check_fields` says at the call."""
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():
        return value.item()  # a scalar: numpy.int64(3) is 3 (an array is refused)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"Encoding objects of type {type(value).__name__} is unsupported")


# Values JSON cannot carry (docs/reference/calls.md), one rule with and without strict: what has
# one obvious JSON form is converted (datetime, date and time to ISO 8601 strings, UUID to its
# text, Decimal to a number with its exact digits, Enum to its value, dataclasses, attrs
# classes and Structs to objects, sets and tuples to arrays, pydantic models and numpy scalars
# by :func:`convert`); bytes are refused at the call (base64 or text? the caller knows).
encode = msgspec.json.Encoder(enc_hook=convert, decimal_format="number").encode


class Track(msgspec.Struct, tag_field="type", tag="track", kw_only=True, omit_defaults=True):
    event: str
    properties: dict[str, Any]
    message_id: str
    sent_at: str
    context: dict[str, Any] | None = None  # last, and omitted when None: old bodies unchanged


class Page(msgspec.Struct, tag_field="type", tag="page", kw_only=True, omit_defaults=True):
    message_id: str
    name: str | None = None
    properties: dict[str, Any]
    sent_at: str
    context: dict[str, Any] | None = None


class Identify(msgspec.Struct, tag_field="type", tag="identify", kw_only=True, omit_defaults=True):
    traits: dict[str, Any]
    message_id: str | None = None
    sent_at: str
    context: dict[str, Any] | None = None


Entry = Track | Page | Identify
"""An entry of a request's ``events``, ``page_views`` or ``identifies``."""


# Pre-drawn ids, shared by every client and thread. ``list.pop`` and ``list.extend`` are each
# atomic under the GIL, so the hot path is one pop with no lock; a thread that finds the
# list empty refills it (two may refill at once: harmless, every id is random).
_ids: list[str] = []
_BLOCK = 1024  # ids made at once (even), so each costs a share of one urandom call
_ROW = 37  # an id and the comma after it
_FIXED = ((8, b"-"), (13, b"-"), (14, b"4"), (18, b"-"), (23, b"-"), (36, b","))  # version 4
_VARIANT = 19  # its hex digit is one of 8, 9, a, b (RFC 4122)
_TO_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")


@in_child
def _after_fork() -> None:
    _ids.clear()  # a child must not use the parent's pre-drawn ids


def new_message_id() -> str:
    """Return a random UUID v4 string, several times faster than ``str(uuid.uuid4())``.

    Safe to call from many threads: no check-then-act, only an atomic pop.
    """
    while True:
        try:
            return _ids.pop()
        except IndexError:
            _refill()


def top_up() -> None:
    """Draw a block of ids ahead of the calls once fewer than half a block are left, so that
    a call only pops one (the runtime's filer calls this between calls)."""
    if len(_ids) < _BLOCK // 2:
        _refill()


def _refill() -> None:
    """Draw a block of ids: random hex digits everywhere, then the dashes, the version, the
    variant and the commas written over them, each column of the block in one strided write
    (7 writes; filling the 31 random columns one by one, 31 copies, took 25% longer)."""
    ids = bytearray(os.urandom(_ROW * _BLOCK // 2).hex(), "ascii")
    for at, char in _FIXED:
        ids[at::_ROW] = char * _BLOCK
    ids[_VARIANT::_ROW] = ids[_VARIANT::_ROW].translate(_TO_VARIANT)
    _ids.extend(ids[:-1].decode().split(","))


# The last millisecond formatted, as the stretch of the monotonic clock it lasts (from, to)
# and its text; and the last second, with its text. Each is one tuple: a thread replaces the
# whole tuple, so no reader can pair one thread's time with another's text.
_millisecond: tuple[float, float, str] = (0.0, -1.0, "")
_second: tuple[int, str] = (-1, "")
_monotonic = time.monotonic


def now_iso() -> str:
    """Return the current UTC time as ISO 8601 with milliseconds and ``Z``."""
    global _millisecond, _second
    start, end, text = _millisecond
    now = _monotonic()
    # Many calls share a millisecond: format it once, and tell it by a float compare (a
    # wall-clock read and a big-int division cost a call 0.1-0.25 µs more, measured).
    if start <= now < end:
        return text
    nanosecond = time.time_ns()
    second, fraction = divmod(nanosecond // 1_000_000, 1000)
    cached, second_text = _second
    if second != cached:
        second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, second_text)
    text = f"{second_text}.{fraction:03d}Z"
    _millisecond = (now, now + (1_000_000 - nanosecond % 1_000_000) / 1e9, text)
    return text


def body(head: bytes, arrays: tuple[tuple[bytes, bytes | bytearray | None], ...]) -> bytes:
    """Stitch a request body from its encoded head fields and its named arrays of entries.

    ``head`` is the inside of the top-level object without braces, e.g.
    ``b'"profile_id":"…","email":"…"'``; each array's inside is comma-joined encoded entries,
    written only if it is not empty.
    """
    parts: list[bytes | bytearray] = [b"{", head]
    for name, entries in arrays:
        if entries:
            parts += (b',"', name, b'":[', entries, b"]")
    parts.append(b"}")
    return b"".join(parts)


def head(fields: tuple[tuple[str, str | None], ...]) -> bytes:
    """Encode the top-level id fields of a body, skipping those that are None."""
    return b",".join(encode(k) + b":" + encode(v) for k, v in fields if v is not None)
