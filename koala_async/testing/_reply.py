"""How the fake collector answers a request: shared by the collector and its HTTP server."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Reply"]


@dataclass(frozen=True)
class Reply:
    """How the collector answers one request (the default: ``200 {"ok": true}``).

    Attributes:
        status: The HTTP status.
        retry_after: Seconds to put in a ``Retry-After`` header, if any.
        delay: Seconds to wait before answering (the request is processed at once).
        reset: Drop the connection instead of answering (on the real server, with a TCP
            reset; through ``transport()``, as an ``httpx.ReadError``).
        body: The response body.
        headers: More response headers (``Content-Type`` is always ``application/json``).
    """

    status: int = 200
    retry_after: float | None = None
    delay: float = 0.0
    reset: bool = False
    body: bytes = b'{"ok":true}'
    headers: Mapping[str, str] = field(default_factory=dict)

    def all_headers(self) -> dict[str, str]:
        """The response headers to send: Content-Type, Retry-After and :attr:`headers`."""
        extra = {} if self.retry_after is None else {"Retry-After": f"{self.retry_after:g}"}
        return {"Content-Type": "application/json", **extra, **self.headers}
