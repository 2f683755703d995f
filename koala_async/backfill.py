"""Backfills: deterministic message ids, and what each call takes, for importers of your own.

``koala-async import`` and the distributed recipes (:mod:`koala_async.dask`) use these; so
can a script of yours. A backfill must be safe to run twice: an entry sent again with the
same ``message_id`` is a repeat Koala drops, so ids must come from the data, not at random.

- :func:`line_id` is the id ``koala-async import`` gives a line without a ``message_id``:
  derived from the line's bytes and its number, so the same file gives the same ids in
  every run and every version, while two identical lines stay two events.
- :func:`row_id` derives an id from a key of your rows (a primary key, or several columns).
- :data:`CALLS` says which arguments each call (``track``, ``identify``, ``page``,
  ``account_identify``, ``account_track``) takes.
"""

from __future__ import annotations

from hashlib import blake2b

from ._calls import CALLS, CallKind

__all__ = ["CALLS", "CallKind", "line_id", "row_id"]

_VARIANT = "89ab"


def _uuid(digest: str) -> str:
    """A 32-hex-digit digest as a version-8 UUID (RFC 9562: custom, here a hash)."""
    return (
        f"{digest[:8]}-{digest[8:12]}-8{digest[13:16]}-"
        f"{_VARIANT[int(digest[16], 16) & 3]}{digest[17:20]}-{digest[20:32]}"
    )


def line_id(number: int, line: bytes) -> str:
    """The message_id of line ``number`` (1-based) of a file, from its bytes.

    BLAKE2b-128 of ``b"<number>\\n"`` followed by the line without its line ending, as a
    version-8 UUID: costs well under a microsecond, and is stable across versions.
    """
    digest = blake2b(b"%d\n" % number, digest_size=16, person=b"koala-line")
    digest.update(line.rstrip(b"\r\n"))
    return _uuid(digest.hexdigest())


def row_id(*key: object) -> str:
    """A message_id from a row's key, e.g. ``row_id(order_id)`` or ``row_id(user, ts, kind)``.

    The key's parts are joined as text (``str()``, separated by a unit separator), so the
    same key gives the same id on every machine, in every run and every version: a task
    run again sends repeats that Koala drops. Pick a key that tells the rows apart.
    """
    text = "\x1f".join(str(part) for part in key)
    return _uuid(blake2b(text.encode(), digest_size=16, person=b"koala-row").hexdigest())
