"""The ``ko_id`` cookie: read the visitor's Koala profile id, or make one and say how to set it.

Koala's guide: respect an existing ``ko_id``, else set a UUID v4 yourself, shared across the
top domain, so the browser pixel and the server agree on who the visitor is. This module is
the whole policy; the ASGI and aiohttp middlewares only move headers.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Literal

from ._exceptions import ValidationError
from ._validate import UUID

__all__ = ["COOKIE", "TWO_YEARS", "CookiePolicy", "read", "sets_ko_id"]

COOKIE = "ko_id"
TWO_YEARS = 2 * 365 * 24 * 3600
# Attribute values go into a header verbatim: no separators, spaces or controls (RFC 6265 4.1.1).
_DOMAIN = re.compile(r"\.?[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\Z")
_PATH = re.compile(r"/[\x21-\x3a\x3c-\x7e]*\Z")
_SAME_SITE = ("Lax", "Strict", "None")


@dataclass(frozen=True)
class CookiePolicy:
    """How to set ``ko_id`` when a visitor has none.

    Attributes:
        domain: e.g. ``".example.com"`` to share the id with every subdomain (and with
            Koala's pixel on ``www``); None (or "") sets a host-only cookie.
        path: The cookie's path.
        max_age: Seconds the cookie lives (default two years).
        same_site: The SameSite attribute. ``"None"`` always adds Secure, as browsers require.
        secure: Set Secure; None means "when the request came over https".
        http_only: Hide the cookie from JavaScript. Off by default: Koala's pixel reads it.

    Raises:
        ValidationError: An attribute would make a broken or injected ``Set-Cookie``.
    """

    domain: str | None = None
    path: str = "/"
    max_age: int = TWO_YEARS
    same_site: Literal["Lax", "Strict", "None"] = "Lax"
    secure: bool | None = None
    http_only: bool = False

    def __post_init__(self) -> None:
        if self.domain and not (isinstance(self.domain, str) and _DOMAIN.match(self.domain)):
            raise ValidationError(
                f"domain must be a host name such as '.example.com', got {self.domain!r}"
            )
        if not (isinstance(self.path, str) and _PATH.match(self.path)):
            raise ValidationError(
                f"path must start with '/' and hold no ';' or spaces, got {self.path!r}"
            )
        if type(self.max_age) is not int or self.max_age <= 0:
            raise ValidationError(
                f"max_age must be a whole number of seconds > 0, got {self.max_age!r}"
            )
        if self.same_site not in _SAME_SITE:
            raise ValidationError(
                f"same_site must be 'Lax', 'Strict' or 'None', got {self.same_site!r}"
            )

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
    """The first valid ``ko_id`` in a ``Cookie`` header, lowercased as the client queues it."""
    for part in (cookie_header or "").split(";"):
        name, _, value = part.partition("=")
        if name.strip() == COOKIE:
            value = value.strip().strip('"')
            if UUID.match(value):
                return value.lower()
    return None


def sets_ko_id(set_cookie: str) -> bool:
    """Whether a ``Set-Cookie`` value is the app's own ``ko_id`` (which then wins over ours)."""
    return set_cookie.partition("=")[0].strip() == COOKIE
