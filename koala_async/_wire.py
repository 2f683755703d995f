"""The wire format: entries encoded once at the call, and request bodies stitched from them.

An entry is encoded to JSON bytes the moment a caller makes it, so later changes to the
caller's dicts cannot reach Koala and the flusher never encodes anything twice: a request
body is the person's id fields followed by the already-encoded entries, joined with commas.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import msgspec

__all__ = ["MAX_PER_KIND", "encode", "new_message_id", "now_iso"]

MAX_PER_KIND = 30
"""Koala accepts at most this many of each kind of entry in one request."""

encode = msgspec.json.Encoder().encode


class Track(msgspec.Struct, tag_field="type", tag="track", kw_only=True, omit_defaults=True):
    event: str
    properties: dict[str, Any]
    message_id: str
    sent_at: str


class Page(msgspec.Struct, tag_field="type", tag="page", kw_only=True, omit_defaults=True):
    message_id: str
    name: str | None = None
    properties: dict[str, Any]
    sent_at: str


class Identify(msgspec.Struct, tag_field="type", tag="identify", kw_only=True, omit_defaults=True):
    traits: dict[str, Any]
    message_id: str | None = None
    sent_at: str


# A private generator: a caller's random.seed() must never make our ids repeat.
_random = random.Random()
_ids: list[str] = []
_BLOCK = 64  # ids drawn at once: one random draw and one mask for all of them
_MASK = ((1 << 128) - 1) & ~((0xF000 << 64) | (0xC000 << 48))  # clears version and variant
_VERSION = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant
_CLEAR = sum(_MASK << (128 * i) for i in range(_BLOCK))
_SET = sum(_VERSION << (128 * i) for i in range(_BLOCK))
_SLICES = [(i, i + 8, i + 12, i + 16, i + 20, i + 32) for i in range(0, 32 * _BLOCK, 32)]


def _after_fork() -> None:
    # A child must neither repeat the parent's sequence nor use its pre-drawn ids.
    _random.seed()
    _ids.clear()


os.register_at_fork(after_in_child=_after_fork)


def new_message_id() -> str:
    """Return a random UUID v4 string, several times faster than ``str(uuid.uuid4())``."""
    if not _ids:
        h = f"{_random.getrandbits(128 * _BLOCK) & _CLEAR | _SET:0{32 * _BLOCK}x}"
        _ids.extend(
            [f"{h[i:a]}-{h[a:b]}-{h[b:c]}-{h[c:d]}-{h[d:e]}" for i, a, b, c, d, e in _SLICES]
        )
    return _ids.pop()


_second = _millisecond = -1
_second_text = _millisecond_text = ""


def now_iso() -> str:
    """Return the current UTC time as ISO 8601 with milliseconds and ``Z``."""
    global _second, _second_text, _millisecond, _millisecond_text
    millisecond = int(time.time() * 1000)
    if millisecond != _millisecond:  # many calls share a millisecond: format it once
        second, fraction = divmod(millisecond, 1000)
        if second != _second:
            _second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            _second = second
        _millisecond_text = f"{_second_text}.{fraction:03d}Z"
        _millisecond = millisecond
    return _millisecond_text


def body(head: bytes, arrays: tuple[tuple[bytes, bytes | bytearray], ...]) -> bytes:
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
