"""Keep public API keys out of logs: ours, and httpx's request lines, which show the URL.

A key reaches text in more forms than one: raw, percent-encoded in the request path
(``quote(key, safe='')``, which httpx logs as given), decoded again by a server that echoes
the path, with lower-case hex from a proxy that re-encodes it, or JSON-escaped in an echoed
body. :func:`redact_text` matches every character of the key in any of those forms, so even
a mix of them (a path encoded in part) is caught.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import TypeVar

__all__ = ["bare", "protect", "redact", "redact_text"]

_keys: set[str] = set()


def redact(key: str) -> str:
    """A recognisable but harmless form of ``key``: its first four characters."""
    return f"{key[:4]}…" if len(key) > 8 else "…"


def redact_text(text: str, key: str) -> str:
    """``text`` with ``key``, in any form it takes on the wire, replaced by its redacted form."""
    if not key:
        return text
    return _pattern(key).sub(redact(key), text)


def _forms(char: str) -> list[str]:
    """Regular expressions for the ways ``char`` may be written in a URL, a log or JSON."""
    utf8 = char.encode("utf-8", "surrogatepass")
    forms = ["".join(f"%{_hex(byte, 2)}" for byte in utf8), re.escape(char)]
    if not char.isascii():
        forms.insert(0, rf"\\u{_hex(ord(char), 4)}")  # as json.dumps writes it
    elif char in '"\\':
        forms.insert(0, re.escape(f"\\{char}"))  # first: the longer form must win
    return forms


def _hex(number: int, width: int) -> str:
    """A pattern for ``number`` in hex, in either case (the key itself is case-sensitive)."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{number:0{width}x}")


@functools.lru_cache(maxsize=64)  # a process holds a key or two; each pattern is built once
def _pattern(key: str) -> re.Pattern[str]:
    return re.compile("".join(f"(?:{'|'.join(_forms(c))})" for c in key))


class _RedactKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = message
        for key in _keys:
            hidden = redact_text(hidden, key)
        if hidden != message:
            record.msg, record.args = hidden, None
        return True


_filter = _RedactKeys()


def protect(key: str) -> None:
    """Redact ``key`` from every record httpx logs (its INFO lines carry request URLs)."""
    _keys.add(key)
    logger = logging.getLogger("httpx")
    if _filter not in logger.filters:
        logger.addFilter(_filter)


_E = TypeVar("_E", bound=BaseException)


def bare(error: _E) -> _E:
    """``error`` with no traceback, nor any on the exceptions it was raised from or during.

    An exception handed out (to ``on_error``) would keep the SDK's frames, and their locals
    hold the request bytes (the key in the path, the body with e-mails) and the entries:
    ``traceback.TracebackException(capture_locals=True)``, rich's ``show_locals`` and error
    trackers that capture locals (Sentry does by default) would print them. The type and
    message say what failed; the frames were the SDK's own.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        exc = pending.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        exc.__traceback__ = None
        pending += (exc.__cause__, exc.__context__)
        inner = getattr(exc, "exceptions", None)  # an exception group's (3.10: a backport's)
        if isinstance(inner, tuple):
            pending += (e for e in inner if isinstance(e, BaseException))
    return error
