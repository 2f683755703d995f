"""The ``ko_id`` cookie: read the visitor's Koala profile id, or make one and say how to set it.

Koala's guide: respect an existing ``ko_id``, else set a UUID v4 yourself, shared across the
top domain, so the browser pixel and the server agree on who the visitor is.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Literal

__all__ = ["COOKIE", "CookiePolicy"]

COOKIE = "ko_id"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
TWO_YEARS = 2 * 365 * 24 * 3600


@dataclass(frozen=True)
class CookiePolicy:
    """How to set ``ko_id`` when a visitor has none.

    Attributes:
        domain: e.g. ``".example.com"`` to share the id with every subdomain (and with
            Koala's pixel on ``www``); None sets a host-only cookie.
        path: The cookie's path.
        max_age: Seconds the cookie lives (default two years).
        same_site: The SameSite attribute.
        secure: Set Secure; None means "when the request came over https".
        http_only: Hide the cookie from JavaScript. Off by default: Koala's pixel reads it.
    """

    domain: str | None = None
    path: str = "/"
    max_age: int = TWO_YEARS
    same_site: Literal["Lax", "Strict", "None"] = "Lax"
    secure: bool | None = None
    http_only: bool = False

    def resolve(self, cookie_header: str | None, https: bool) -> tuple[str, str | None]:
        """Return the visitor's profile id and, if it is new, the ``Set-Cookie`` value to send."""
        current = read(cookie_header)
        if current is not None:
            return current, None
        profile_id = str(uuid.uuid4())
        return profile_id, self.set_cookie(profile_id, https)

    def set_cookie(self, profile_id: str, https: bool) -> str:
        """The ``Set-Cookie`` header value that stores ``profile_id``."""
        parts = [f"{COOKIE}={profile_id}", f"Path={self.path}", f"Max-Age={self.max_age}"]
        if self.domain:
            parts.append(f"Domain={self.domain}")
        parts.append(f"SameSite={self.same_site}")
        if self.secure or (self.secure is None and https) or self.same_site == "None":
            parts.append("Secure")
        if self.http_only:
            parts.append("HttpOnly")
        return "; ".join(parts)


def read(cookie_header: str | None) -> str | None:
    """The valid ``ko_id`` in a ``Cookie`` header, lowercased, or None."""
    for part in (cookie_header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            value = value.strip().strip('"')
            if _UUID.match(value):
                return value.lower()
    return None
