"""Checks and normalisations of caller input: pure functions that raise :class:`ValidationError`.

Everything here runs on the hot path, so the common case is a type check or one regex match.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ._exceptions import ValidationError

UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
"""A UUID in its usual text form, in any case: what a ko_id cookie holds."""
_EMAIL = re.compile(r"[^@\s\"<>,;]+@[^@\s\"<>,;]+\.[^@\s\"<>,;.]+\Z")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
_TLD = re.compile(r"([a-z]{2,63}|xn--[a-z0-9-]{1,59})\Z")
_SCALARS = frozenset((str, int, bool, type(None)))


Who = tuple[str, str, str, str | None]
"""Where an entry is queued: ``(primary field, its value, secondary field, its value)``."""

# Ids already checked, so a busy visitor costs one dict lookup rather than a regex match.
_CACHE_SIZE = 65_536
_profile_ids: dict[str, str] = {}
_emails: set[str] = set()


def person(profile_id: object, email: object) -> Who:
    """Check a profile call's ids; queue by profile_id (lowercased) when given, else email."""
    if email is not None and (type(email) is not str or email not in _emails):
        if type(email) is not str or not _EMAIL.match(email):
            raise ValidationError(f"email must be an address like 'ada@example.com', got {email!r}")
        if len(_emails) >= _CACHE_SIZE:
            _emails.clear()
        _emails.add(email)
    if profile_id is None:
        if email is None:
            raise ValidationError(
                "pass profile_id (the visitor's ko_id cookie) or email, or both: "
                "Koala needs one to know who this is"
            )
        return "email", email, "email", None
    if type(profile_id) is str:
        checked = _profile_ids.get(profile_id)
        if checked is None and UUID.match(profile_id):
            if len(_profile_ids) >= _CACHE_SIZE:
                _profile_ids.clear()
            checked = _profile_ids[profile_id] = profile_id.lower()
        if checked is not None:
            return "profile_id", checked, "email", email
    raise ValidationError(
        f"profile_id must be a UUID string such as the ko_id cookie holds, got {profile_id!r}"
    )


def account(domain: object, account_id: object) -> Who:
    """Check an account call's ids; queue by normalised domain when given, else account_id."""
    if account_id is not None and (type(account_id) is not str or not account_id.strip()):
        raise ValidationError(f"account_id must be a non-empty string, got {account_id!r}")
    if domain is not None:
        if type(domain) is not str:
            raise ValidationError(f"domain must be a string such as 'acme.com', got {domain!r}")
        return "domain", normalize_domain(domain), "account_id", account_id
    if account_id is None:
        raise ValidationError(
            "pass domain (preferred, e.g. 'acme.com') or account_id: "
            "Koala needs one to know which account this is"
        )
    return "account_id", account_id, "account_id", None


@functools.lru_cache(maxsize=4096)
def normalize_domain(value: str) -> str:
    """Reduce a URL, e-mail domain or host to the bare domain Koala keys accounts by.

    Lowercases, strips scheme, credentials, path, port and a leading ``www.``, and
    IDNA-encodes, so ``"https://WWW.Bücher.de:443/x"`` becomes ``"xn--bcher-kva.de"``.
    """
    host = value.strip().lower()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    host = host.rsplit("@", 1)[-1].split(":", 1)[0].rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        host = ""
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.match(x) for x in labels) or not _TLD.match(labels[-1]):
        raise ValidationError(f"domain must be a domain name such as 'acme.com', got {value!r}")
    return host


def event_name(value: object) -> str:
    """Return an event name, which must be a non-blank string."""
    if type(value) is not str or not value.strip():
        raise ValidationError(
            f"event must be a non-empty string such as 'Signed Up', got {value!r}"
        )
    return value


def text(value: object, what: str) -> str:
    """Return ``value`` if it is a non-empty string."""
    if type(value) is str and value:
        return value
    raise ValidationError(f"{what} must be a non-empty string, got {value!r}")


def fields(value: object, what: str) -> dict[str, Any]:
    """Check ``properties``/``traits``: a dict (any mapping is copied to one), or None.

    Number keys become strings, as ``json.dumps`` writes them; a key or value JSON cannot
    carry at all is refused when the entry is encoded.
    """
    if type(value) is not dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValidationError(
                f"{what} must be a dict with string keys, got {type(value).__name__}"
            )
        value = dict(value)
    for item in value.values():
        if type(item) not in _SCALARS:
            _check_value(value, what)  # walks it all and names the bad value, if any
            break
    return value


def _check_value(value: object, where: str) -> None:
    # JSON has no NaN or Infinity; msgspec would quietly write them as null.
    try:
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValidationError(f"{where} is {value!r}, which JSON cannot carry")
        elif isinstance(value, dict):
            for k, v in value.items():
                _check_value(v, f"{where}[{k!r}]")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                _check_value(v, f"{where}[{i}]")
    except RecursionError:
        raise ValidationError(f"{where} nests too deeply or contains itself") from None


def sent_at(value: object) -> str:
    """Return a caller's ``sent_at`` as UTC ISO 8601 with milliseconds and ``Z``.

    Naive datetimes are taken to be UTC, as ``datetime.utcnow()`` makes them.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" else text)
        except ValueError:
            raise ValidationError(
                f"sent_at must be an ISO 8601 timestamp such as '2024-05-01T12:00:00.000Z', "
                f"got {value!r}"
            ) from None
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise ValidationError(
            f"sent_at must be a datetime or an ISO 8601 string, got {type(value).__name__}"
        )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        utc = parsed.astimezone(timezone.utc)
    except OverflowError:
        raise ValidationError(f"sent_at {value!r} is out of range once moved to UTC") from None
    # isoformat, unlike strftime("%Y"), pads years before 1000 to four digits.
    return utc.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
