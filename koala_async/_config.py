"""The client's options: defaults, environment fallbacks, and checks that name the fix.

Every mistake here raises :class:`ValidationError` when the client is built, not later
inside a background task.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Literal

from . import _validate
from ._exceptions import ValidationError
from ._redact import protect, redact, redact_text
from ._retry import RetryPolicy
from ._version import __version__

__all__ = ["DEFAULT_BASE_URL", "Config", "OnFull"]

DEFAULT_BASE_URL = "https://api2.getkoala.com"
OnFull = Literal["pace", "block", "drop", "raise"]
_ON_FULL = ("pace", "block", "drop", "raise")


_EXAMPLE = f"such as {DEFAULT_BASE_URL!r} (or 'http://127.0.0.1:8787' for `koala-async collector`)"
_MAX_SHOWN = 200  # characters of a bad base_url a message repeats


def _base_url(base: object, key: str) -> str:
    """Check ``base_url`` (or KOALA_BASE_URL): an http(s) origin, nothing more. Returned
    without a trailing slash. Each refusal names the fix, so that a mistake is seen here
    and not, later, as every batch dropped or a failure inside a background task."""
    if not isinstance(base, str):
        raise ValidationError(f"base_url must be a string, got {type(base).__name__}")
    shown = redact_text(repr(base[:_MAX_SHOWN]), key) + ("…" if len(base) > _MAX_SHOWN else "")
    if any(c in base for c in "\r\n\t\0 ") or not base.isprintable():
        raise ValidationError(
            f"base_url holds a space or a control character (CR, LF, TAB, NUL...), got "
            f"{shown}: give the bare URL, {_EXAMPLE}"
        )
    from urllib.parse import urlsplit  # at construction, not at import

    base = base.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError(f"base_url must be an http(s) URL {_EXAMPLE}, got {shown}")
    if "@" in parts.netloc:
        # httpx would send them as basic auth, and every log line would show the password:
        # Koala's ingestion API takes no credentials but the key in the path.
        raise ValidationError(
            "base_url holds a user name or password (user:pass@host), which Koala does not "
            f"take: remove them, {_EXAMPLE}; for a proxy that needs them, pass an "
            "http_client= of your own"
        )
    if parts.path or parts.query or parts.fragment or base.endswith(("?", "#")):
        raise ValidationError(
            f"base_url must be the origin alone ({parts.scheme}://{parts.netloc}), without "
            f"a path, query or fragment: the SDK adds /web/projects/<key>/batch; got {shown}"
        )
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 and parts.netloc.rpartition("]")[2].count(":"):
        raise ValidationError(
            f"base_url names an impossible port (1 to 65535), got {shown}: leave the port "
            f"out for the scheme's own ({parts.scheme}://{parts.hostname})"
        )
    return base


@dataclass(frozen=True)
class Config:
    """Checked options, and what follows from them (URLs, headers)."""

    key: str
    base_url: str
    urls: tuple[str, str]  # /batch, /accounts/batch
    headers: dict[str, str]
    flush_interval: float
    max_queue_size: int
    on_full: OnFull
    max_concurrent_requests: int
    enabled: bool
    timeout: float
    shutdown_timeout: float
    retry: RetryPolicy
    strict: bool = False  # bad calls raise instead of being dropped as "invalid"/"closed"
    send_ip: bool = True  # False: neither a top-level ip nor context.ip is ever sent

    @property
    def shown_url(self) -> str:
        """Where batches go, fit for a log line (the key shortened)."""
        return f"{self.base_url}/web/projects/{redact(self.key)}/batch"

    @classmethod
    def build(
        cls,
        public_api_key: str | None,
        *,
        base_url: str | None,
        user_agent: str | None,
        flush_interval: float,
        max_queue_size: int,
        on_full: str,
        max_concurrent_requests: int,
        enabled: bool,
        timeout: float,
        shutdown_timeout: float,
        retry: RetryPolicy | None,
        strict: bool = False,
        send_ip: bool = True,
    ) -> Config:
        key = public_api_key or os.environ.get("KOALA_PUBLIC_API_KEY")
        if not key or not isinstance(key, str) or any(c in key for c in "/?# \t\r\n\0"):
            raise ValidationError(
                "pass public_api_key or set KOALA_PUBLIC_API_KEY to your workspace's public "
                "API key (Koala: Settings → Workspace → Public API key)"
                if not key
                else f"public_api_key {redact(str(key))!r} is not a key: it holds a space, "
                "slash or similar"
            )
        base = _base_url(base_url or os.environ.get("KOALA_BASE_URL") or DEFAULT_BASE_URL, key)
        agent = f"koala-async/{__version__}"
        caller = _validate.user_agent(user_agent)
        if caller:
            agent = f"{caller} {agent}"
        if on_full not in _ON_FULL:
            raise ValidationError(
                f"on_full must be one of {', '.join(map(repr, _ON_FULL))}, got {on_full!r}"
            )
        for name, value, least in (
            ("flush_interval", flush_interval, "greater than 0"),
            ("timeout", timeout, "greater than 0"),
            ("shutdown_timeout", shutdown_timeout, "0 or more"),
        ):
            if (
                type(value) not in (int, float)
                or not 0 <= value < math.inf
                or (value == 0 and least != "0 or more")
            ):
                raise ValidationError(f"{name} must be a number of seconds {least}, got {value!r}")
        for name, count in (
            ("max_queue_size", max_queue_size),
            ("max_concurrent_requests", max_concurrent_requests),
        ):
            if type(count) is not int or count < 1:
                raise ValidationError(f"{name} must be a whole number of at least 1, got {count!r}")
        for name, flag in (("strict", strict), ("send_ip", send_ip)):
            if type(flag) is not bool:
                raise ValidationError(f"{name} must be True or False, got {flag!r}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ValidationError(f"retry must be a RetryPolicy, got {type(retry).__name__}")

        from urllib.parse import quote

        protect(key)
        path = f"{base}/web/projects/{quote(key, safe='')}"
        return cls(
            key=key,
            base_url=base,
            urls=(f"{path}/batch", f"{path}/accounts/batch"),
            headers={"User-Agent": agent, "Content-Type": "application/json"},
            flush_interval=float(flush_interval),
            max_queue_size=max_queue_size,
            on_full=on_full,  # type: ignore[arg-type]
            max_concurrent_requests=max_concurrent_requests,
            enabled=bool(enabled),
            timeout=float(timeout),
            shutdown_timeout=float(shutdown_timeout),
            retry=retry or RetryPolicy(),
            strict=strict,
            send_ip=send_ip,
        )
