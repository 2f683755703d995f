"""The ko_id cookie policy on its own: parsing, the Set-Cookie it builds, and its checks."""

from __future__ import annotations

import uuid
from http.cookies import SimpleCookie
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wire_check import is_uuid4

from koala_async import ValidationError
from koala_async._cookie import CookiePolicy, read, sets_ko_id

KNOWN = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        (f"ko_id={KNOWN}", KNOWN),
        (f"theme=dark; ko_id={KNOWN}; lang=en", KNOWN),
        (f'ko_id="{KNOWN}"', KNOWN),
        (f"ko_id={KNOWN.upper()}", KNOWN),  # lowercased, as the client queues profile ids
        (f" ko_id = {KNOWN} ", KNOWN),
        (f"ko_id=garbage; ko_id={KNOWN}", KNOWN),  # e.g. a host cookie and a domain cookie
        (f"xko_id={KNOWN}; ko_id2={KNOWN}", None),
        (f"ko_id={KNOWN}0", None),
        (f"ko_id={KNOWN.replace('-', '')}", None),
        ("ko_id=", None),
        ("ko_id", None),
    ],
)
def test_read_finds_only_a_valid_ko_id(header: str | None, expected: str | None) -> None:
    assert read(header) == expected


@given(st.text())
def test_read_returns_a_lowercase_uuid_or_none_for_any_header(header: str) -> None:
    found = read(header)
    assert found is None or str(uuid.UUID(found)) == found


@given(st.lists(st.sampled_from(["a=b", "ko_id=x", "", " ", "ko_id", "=", '"'])), st.uuids())
def test_a_valid_ko_id_anywhere_is_respected(noise: list[str], visitor: uuid.UUID) -> None:
    header = "; ".join([*noise, f"ko_id={visitor}"])
    assert CookiePolicy().resolve(header, https=True) == (str(visitor), None)


def parse(set_cookie: str) -> Any:
    jar: SimpleCookie = SimpleCookie()
    jar.load(set_cookie)
    return jar["ko_id"]


def test_a_new_visitor_gets_a_uuid4_in_a_cookie_browsers_parse() -> None:
    profile_id, set_cookie = CookiePolicy(domain=".acme.com").resolve("ko_id=nope", https=True)
    assert is_uuid4(profile_id)
    assert set_cookie is not None
    morsel = parse(set_cookie)
    assert morsel.value == profile_id
    assert morsel["domain"] == ".acme.com"
    assert morsel["path"] == "/"
    assert morsel["max-age"] == str(2 * 365 * 24 * 3600)
    assert morsel["samesite"] == "Lax"
    assert morsel["secure"] is True
    assert not morsel["httponly"], "Koala's pixel reads ko_id from JavaScript"
    assert read(f"ko_id={morsel.value}") == profile_id


def test_new_ids_differ() -> None:
    ids = {CookiePolicy().resolve(None, https=False)[0] for _ in range(100)}
    assert len(ids) == 100


@pytest.mark.parametrize(
    ("policy", "https", "secure"),
    [
        (CookiePolicy(), True, True),
        (CookiePolicy(), False, False),
        (CookiePolicy(secure=True), False, True),
        (CookiePolicy(secure=False), True, False),
        (CookiePolicy(same_site="None", secure=False), False, True),  # browsers require it
    ],
)
def test_secure_follows_the_scheme_unless_told(
    policy: CookiePolicy, https: bool, secure: bool
) -> None:
    assert ("; Secure" in policy.set_cookie(KNOWN, https)) is secure


def test_every_option_reaches_the_header() -> None:
    policy = CookiePolicy(
        domain="localhost", path="/app", max_age=60, same_site="Strict", http_only=True
    )
    assert policy.set_cookie(KNOWN, https=False) == (
        f"ko_id={KNOWN}; Path=/app; Max-Age=60; Domain=localhost; SameSite=Strict; HttpOnly"
    )


@pytest.mark.parametrize("domain", [None, "", "acme.com", ".acme.co.uk", "127.0.0.1", "a"])
def test_good_domains_are_taken(domain: str | None) -> None:
    set_cookie = CookiePolicy(domain=domain).set_cookie(KNOWN, https=False)
    assert ("Domain=" in set_cookie) is bool(domain)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"domain": ".acme.com; HttpOnly"}, "domain must be a host name"),
        ({"domain": "acme .com"}, "domain must be a host name"),
        ({"domain": "acme.com\r\nX-Evil: 1"}, "domain must be a host name"),
        ({"domain": "acme.com."}, "domain must be a host name"),
        ({"domain": 5}, "domain must be a host name"),
        ({"path": "app"}, "path must start with '/'"),
        ({"path": "/; Domain=evil.com"}, "path must start with '/'"),
        ({"path": "/a b"}, "path must start with '/'"),
        ({"max_age": 0}, "max_age must be a whole number"),
        ({"max_age": -1}, "max_age must be a whole number"),
        ({"max_age": 1.5}, "max_age must be a whole number"),
        ({"max_age": True}, "max_age must be a whole number"),
        ({"same_site": "lax"}, "same_site must be 'Lax', 'Strict' or 'None'"),
    ],
)
def test_options_that_would_break_the_header_are_refused(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        CookiePolicy(**options)


@pytest.mark.parametrize(
    ("set_cookie", "expected"),
    [
        (f"ko_id={KNOWN}; Path=/", True),
        ('ko_id=""; Max-Age=0', True),
        ("KO_ID=x", False),
        ("ko_id2=x", False),
        ("session=ko_id", False),
    ],
)
def test_sets_ko_id_spots_the_apps_own_cookie(set_cookie: str, expected: bool) -> None:
    assert sets_ko_id(set_cookie) is expected
