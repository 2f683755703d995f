"""Checks and normalisations of caller input: pure functions that raise :class:`ValidationError`.

Everything here runs on the hot path, so the common case is a type check or one set lookup.
The rule: whatever a call accepts must encode (msgspec raises on a lone surrogate, writes
NaN as ``null`` and a dict holding both ``"1"`` and ``1`` with a duplicate key), so anything
that would not is refused here, at the call, before the entry is queued.

The caches of checked ids and event names are module globals shared by every client and
thread: each is bounded (ids by count, names by characters), and a hit is one lookup, atomic
under the GIL (free-threaded builds are not a target).
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import msgspec

from ._exceptions import ValidationError
from ._wire import Entry, Identify, Page, Track, convert

UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
"""A UUID in its usual text form, in any case: what a ko_id cookie holds."""
_EMAIL = re.compile(r"[^@\s\"<>,;]+@[^@\s\"<>,;]+\.[^@\s\"<>,;.]+\Z")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
_TLD = re.compile(r"([a-z]{2,63}|xn--[a-z0-9-]{1,59})\Z")
_SCALARS = frozenset((str, int, bool, type(None)))
_BINARY = (bytes, bytearray, memoryview)
_LEFT_AS_IS = (*_BINARY, Decimal)  # for _check_plain to judge, not converted to str
_USER_AGENT = re.compile(r"[\x20-\x7e]+\Z")  # printable ASCII: httpx encodes headers as ASCII
_SENT_AT = re.compile(  # the ISO 8601 forms msgspec's RFC 3339 parser leaves out
    r"(\d{4}-\d\d-\d\d)(?:[Tt ](\d\d)(?::(\d\d)(?::(\d\d)(?:[.,](\d+))?)?)?)?"
    r"([Zz]|[+-]\d\d(?::?\d\d)?)?\Z"
)
MAX_EMAIL = 254
"""The longest address SMTP can carry (RFC 5321's 256-octet path, less its angle brackets)."""
MAX_DOMAIN_INPUT = 2048
"""The longest domain argument (a bare domain or a URL) that ``normalize_domain`` remembers."""


Who = tuple[str, str, str, str | None]
"""Where an entry is queued: ``(primary field, its value, secondary field, its value)``."""

# Ids and event names already checked, so a busy visitor costs one lookup rather than a
# regex match. Readers never lock; a writer swaps in an empty cache when full. The id caches
# are bounded by count, since an id is short (a UUID 36 characters, an e-mail at most 254:
# 2 M characters at most), and take no lock: a new visitor's call is hot too (the lock and
# its bookkeeping cost ~0.9 µs of a 3 µs check on a slow machine). Two threads that empty
# one at once lose a few entries, which only costs them a check again. Event names have no
# length cap, so their cache is bounded by characters held (by count, 8,000 distinct
# 100 KB strings would hold 764 MB), under a lock; an app has few names.
_MAX_IDS = 8192  # ids remembered per cache: repeat visitors hit; a crowd of new ones costs little
_CACHE_CHARS = 200_000  # characters of event names remembered
_lock = threading.Lock()
_profile_ids: dict[str, Who] = {}  # a checked id's target, as a call with no email has it
_emails: dict[str, Who] = {}  # a checked address's target, as a call by email has it
_events: set[str] = set()
_event_chars = 0


SHOWN = 200
"""The most characters of a caller's value an error message repeats: a 10 MB bad id must
not become a 10 MB log line."""


def shown(value: object) -> str:
    """``repr(value)`` cut to about :data:`SHOWN` characters, for messages and logs."""
    if isinstance(value, str | bytes) and len(value) > SHOWN:
        return f"{value[:SHOWN]!r}… ({len(value):,} in all)"
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}… ({len(text):,} characters)"


def person(profile_id: object, email: object) -> Who:
    """Check a profile call's ids; queue by profile_id (lowercased) when given, else email."""
    if profile_id is None:
        if type(email) is str:
            who = _emails.get(email)
            if who is not None:
                return who
        if email is None:
            raise ValidationError(
                "pass profile_id (the visitor's ko_id cookie) or email, or both: "
                "Koala needs one to know who this is"
            )
        return _check_email(email)
    if email is not None and (type(email) is not str or email not in _emails):
        email = _check_email(email)[1]
    if type(profile_id) is str:
        who = _profile_ids.get(profile_id)
        if who is None and UUID.match(profile_id):  # a UUID is 36 ASCII characters
            who = ("profile_id", profile_id.lower(), "email", None)
            _remember_profile_id(profile_id, who)
        if who is not None:
            return who if email is None else ("profile_id", who[1], "email", email)
    raise ValidationError(
        f"profile_id must be a UUID string such as the ko_id cookie holds, got {shown(profile_id)}"
    )


def _check_email(email: object) -> Who:
    """Check an email the cache has not seen, and remember it; return its target."""
    if type(email) is not str or not _EMAIL.match(email):
        raise ValidationError(
            f"email must be an address like 'ada@example.com', got {shown(email)}"
        )
    if len(email) > MAX_EMAIL:
        raise ValidationError(
            f"email must be at most {MAX_EMAIL} characters (RFC 5321), got one of {len(email)}"
        )
    _check_text(email, "email")
    global _emails
    if len(_emails) >= _MAX_IDS:
        _emails = {}
    _emails[email] = who = ("email", email, "email", None)
    return who


def _remember_profile_id(given: str, checked: Who) -> None:
    global _profile_ids
    if len(_profile_ids) >= _MAX_IDS:
        _profile_ids = {}
    _profile_ids[given] = checked


def _remember_event(name: str) -> None:
    """Add a checked event name to its cache, emptying the cache if it would hold too many
    characters. Call with ``_lock`` held. Readers may still hold the old set: a valid cache."""
    global _events, _event_chars
    if _event_chars + len(name) > _CACHE_CHARS:
        _events, _event_chars = set(), 0
    _event_chars += len(name)
    _events.add(name)


def account(domain: object, account_id: object) -> Who:
    """Check an account call's ids; queue by normalised domain when given, else account_id."""
    if account_id is not None and (
        type(account_id) is not str
        or not account_id.strip()
        or not (account_id.isascii() or _encodes(account_id))
    ):
        if type(account_id) is str and account_id.strip():
            _check_text(account_id, "account_id")
        raise ValidationError(f"account_id must be a non-empty string, got {shown(account_id)}")
    if domain is not None:
        if type(domain) is not str:
            raise ValidationError(
                f"domain must be a string such as 'acme.com', got {shown(domain)}"
            )
        return "domain", normalize_domain(domain), "account_id", account_id
    if account_id is None:
        raise ValidationError(
            "pass domain (preferred, e.g. 'acme.com') or account_id: "
            "Koala needs one to know which account this is"
        )
    return "account_id", account_id, "account_id", None


def normalize_domain(value: str) -> str:
    """Reduce a URL, e-mail domain or host to the bare domain Koala keys accounts by.

    Lowercases, strips scheme, credentials, path, port and a leading ``www.``, and
    IDNA-encodes, so ``"https://WWW.Bücher.de:443/x"`` becomes ``"xn--bcher-kva.de"``.
    Results for arguments up to ``MAX_DOMAIN_INPUT`` characters are remembered (at most
    4,096 of them, so 8 M characters); a longer one, a URL with a long path, is parsed anew.
    """
    if len(value) <= MAX_DOMAIN_INPUT:
        return _normalize_domain_cached(value)
    return _normalize_domain(value)


def _normalize_domain(value: str) -> str:
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
        raise ValidationError(
            f"domain must be a domain name such as 'acme.com', got {shown(value)}"
        )
    if len(host) > 253:  # the most DNS allows
        raise ValidationError(f"domain must be at most 253 characters, got {len(host)}")
    return host


# lru_cache locks its own bookkeeping, so threads may share it.
_normalize_domain_cached = functools.lru_cache(maxsize=4096)(_normalize_domain)


def event_name(value: object) -> str:
    """Return an event name, which must be a non-blank string."""
    if type(value) is str and value in _events:  # an app has few names: usually a hit
        return value
    if type(value) is not str or not value.strip():
        raise ValidationError(
            f"event must be a non-empty string such as 'Signed Up', got {shown(value)}"
        )
    _check_text(value, "event")
    with _lock:
        _remember_event(value)
    return value


def text(value: object, what: str) -> str:
    """Return ``value`` if it is a non-empty string UTF-8 can carry."""
    if type(value) is str and value:
        if value.isascii():
            return value
        _check_text(value, what)
        return value
    raise ValidationError(f"{what} must be a non-empty string, got {shown(value)}")


def user_agent(value: object) -> str | None:
    """Check the ``user_agent`` keyword: one line of printable ASCII, returned stripped.

    Anything else would be written raw into the ``User-Agent`` header (a CR or LF injects
    headers) or fail to encode in httpx, which writes headers as ASCII.
    """
    if value is None:
        return None
    if type(value) is not str or not value.strip():
        raise ValidationError(
            f"user_agent must be a non-empty string such as 'acme-app/2.3.0', got {shown(value)}"
        )
    if not _USER_AGENT.match(value):
        raise ValidationError(
            "user_agent must be one line of text, printable ASCII with no control characters "
            f"(no CR, LF, tab or NUL), such as 'acme-app/2.3.0'; got {shown(value)}"
        )
    return value.strip()


def _encodes(value: str) -> bool:
    """Whether UTF-8 (and so JSON) can carry ``value``: a lone surrogate cannot."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _check_text(value: str, where: str) -> None:
    """Refuse a string holding a lone surrogate, which msgspec refuses to encode."""
    if not value.isascii() and not _encodes(value):
        at = next(i for i, c in enumerate(value) if "\ud800" <= c <= "\udfff")
        raise ValidationError(
            f"{where} holds a lone surrogate ({value[at]!r} at index {at}), which UTF-8 and so "
            "JSON cannot carry; it usually comes from bytes decoded with "
            "errors='surrogateescape': decode them with errors='replace' instead"
        )


def fields(value: object, what: str) -> dict[str, Any]:
    """Check ``properties``/``traits``: a dict (any mapping is copied to one), or None.

    Number keys become strings, as ``json.dumps`` writes them (two keys that would become the
    same string are refused); any other key, and any value msgspec cannot encode or would
    write as ``null`` (NaN, infinities), is refused. A lone surrogate in a top-level string
    key or value is left to the encoder at the call (see :func:`unencodable`), so the common
    case costs a type check per item.
    """
    if type(value) is not dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValidationError(
                f"{what} must be a dict with string keys, got {type(value).__name__}"
            )
        value = dict(value)
    for key, item in value.items():
        if type(key) is not str or type(item) not in _SCALARS:
            try:
                plain = _is_plain(value)
            except RecursionError:
                plain = False
            if not plain:
                check_fields(value, what)  # converts and walks it all, naming a bad value
            break
    return value


def _is_plain(value: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> bool:
    """Whether ``value`` holds only what JSON carries as is: string keys; strings, ints,
    bools, None and finite floats, in lists and dicts. Strings are left to the encoder, as
    at the top level. Builds no message: a float price or a nested list costs a type check
    per item, not :func:`check_fields`' conversion and walk (~10x more)."""
    items: Iterable[Any] = value
    if type(value) is dict:
        for key in value:
            if type(key) is not str:
                return False
        items = value.values()
    for item in items:
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is float:
            if item - item != 0:  # NaN or an infinity: msgspec would write null
                return False
        elif kind is dict or kind is list or kind is tuple:
            if not _is_plain(item):
                return False
        else:
            return False
    return True


_CARRIED = (
    "JSON carries str, int, float, bool, None, lists and dicts; datetime, date, time, UUID, "
    "Decimal, Enum, dataclasses, sets, pydantic models and numpy scalars are converted"
)
"""What the refusal of a value says: the rule in one sentence (docs/reference/calls.md)."""


def check_fields(value: Mapping[Any, Any], what: str) -> None:
    """Refuse ``value`` unless it encodes to JSON that decodes back to the same data.

    The slow path of :func:`fields`: it converts ``value`` as the encoder would (sets,
    dataclasses and Structs become lists and dicts, :func:`._wire.convert` the rest) and
    walks the result. Bytes are left as they are, to be refused: msgspec would send them as
    base64, which the caller may not have meant.
    """
    try:
        plain = msgspec.to_builtins(
            value, str_keys=False, builtin_types=_LEFT_AS_IS, enc_hook=convert
        )
        _check_plain(plain, what)
    except RecursionError:
        raise ValidationError(f"{what} nests too deeply or contains itself") from None
    except (TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(
            f"{what} hold a value JSON cannot carry ({exc}): {_CARRIED}"
        ) from None


def _check_plain(value: Any, where: str) -> None:
    """Walk what ``msgspec.to_builtins`` made of a value, refusing what JSON cannot carry."""
    kind = type(value)
    if kind is str:
        _check_text(value, where)
    elif kind is float or kind is Decimal:
        if not value.is_finite() if kind is Decimal else not math.isfinite(value):
            # JSON has no NaN or Infinity; msgspec would quietly write them as null.
            raise ValidationError(f"{where} is {shown(value)}, which JSON cannot carry")
    elif kind in _BINARY:
        raise ValidationError(
            f"{where} is {kind.__name__}, which JSON cannot carry: decode it to a str "
            "(.decode() for text, base64 for binary), as you mean it to be read"
        )
    elif kind is dict:
        sent_as: dict[str, object] = {}
        for key, item in value.items():
            name = _key(key, where)
            if name in sent_as:
                raise ValidationError(
                    f"{where} has the keys {shown(sent_as[name])} and {shown(key)}, both sent as "
                    f"{shown(name)}: JSON objects hold one value per key, so keep one"
                )
            sent_as[name] = key
            _check_plain(item, f"{where}[{shown(key)}]")
    elif kind is list or kind is tuple:  # to_builtins leaves tuples as they are
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")


def _key(key: Any, where: str) -> str:
    """The string msgspec writes for a dict key, or a ValidationError if it writes none."""
    kind = type(key)
    if kind is str:
        _check_text(key, f"{where} key {shown(key)}")
        return str(key)
    if kind is int:
        return str(key)
    if kind is float and math.isfinite(key):
        return msgspec.json.encode(key).decode()  # as msgspec writes it: 1e20 is "1e20"
    raise ValidationError(
        f"{where} has the key {shown(key)}: keys must be strings (or ints and finite floats, "
        "which are sent as strings)"
    )


def unencodable(entry: Entry, exc: Exception) -> ValidationError:
    """The ValidationError for an entry msgspec failed to encode, naming the bad value.

    :func:`fields` leaves top-level strings to the encoder (checking each would cost the
    hot path), so a lone surrogate there surfaces as the encoder's error; this finds it.
    """
    what = "traits" if type(entry) is Identify else "properties"
    try:
        if type(entry) is Track:
            _check_text(entry.event, "event")
        if type(entry) is Page and entry.name is not None:
            _check_text(entry.name, "name")
        if entry.message_id is not None:
            _check_text(entry.message_id, "message_id")
        check_fields(entry.traits if isinstance(entry, Identify) else entry.properties, what)
        if entry.context is not None:
            check_fields(entry.context, "context")
    except ValidationError as error:
        return error
    if entry.context is not None:
        what += " or context"
    return ValidationError(f"{what} hold a value JSON cannot carry ({exc}): {_CARRIED}")


def sent_at(value: object) -> str:
    """Return a caller's ``sent_at`` as UTC ISO 8601 with milliseconds and ``Z``.

    Naive datetimes are taken to be UTC, as ``datetime.utcnow()`` makes them. Strings are
    parsed by msgspec, not ``datetime.fromisoformat``, whose grammar differs between the
    Pythons we support (3.10 refuses ``.5`` seconds, 3.11 takes week dates): RFC 3339, plus
    the ISO 8601 shortenings ``_SENT_AT`` lists (a date alone, hours and minutes alone,
    ``,`` before fractions, ``+02`` offsets) on every Python alike.
    """
    if isinstance(value, str):
        parsed = _parse_iso(value.strip())
        if parsed is None:
            raise ValidationError(
                f"sent_at must be an ISO 8601 timestamp such as '2024-05-01T12:00:00.000Z', "
                f"got {shown(value)}"
            )
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
        raise ValidationError(f"sent_at {shown(value)} is out of range once moved to UTC") from None
    # isoformat, unlike strftime("%Y"), pads years before 1000 to four digits.
    return utc.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _parse_iso(text: str) -> datetime | None:
    """Parse an ISO 8601 timestamp the same way on every Python, or return None."""
    try:
        return msgspec.convert(text, datetime)
    except (msgspec.ValidationError, UnicodeError):
        pass
    match = _SENT_AT.match(text)
    if match is None:
        return None
    day, hour, minute, second, fraction, offset = match.groups()
    if offset is not None and len(offset) == 3:  # "+02" means "+02:00"
        offset += ":00"
    rfc3339 = (
        f"{day}T{hour or '00'}:{minute or '00'}:{second or '00'}"
        f"{'.' + fraction if fraction else ''}{offset or ''}"
    )
    try:
        return msgspec.convert(rfc3339, datetime)
    except msgspec.ValidationError:
        return None
