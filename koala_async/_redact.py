"""Keep public API keys out of logs: ours, and httpx's request lines, which show the URL."""

from __future__ import annotations

import logging

__all__ = ["protect", "redact", "redact_text"]

_keys: set[str] = set()


def redact(key: str) -> str:
    """A recognisable but harmless form of ``key``: its first four characters."""
    return f"{key[:4]}…" if len(key) > 8 else "…"


def redact_text(text: str, key: str) -> str:
    """``text`` with ``key`` replaced by its redacted form."""
    return text.replace(key, redact(key))


class _RedactKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = message
        for key in _keys:
            hidden = redact_text(hidden, key)
        if hidden is not message:
            record.msg, record.args = hidden, None
        return True


_filter = _RedactKeys()


def protect(key: str) -> None:
    """Redact ``key`` from every record httpx logs (its INFO lines carry request URLs)."""
    _keys.add(key)
    logger = logging.getLogger("httpx")
    if _filter not in logger.filters:
        logger.addFilter(_filter)
