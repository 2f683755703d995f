"""IP addresses as they are sent: canonical text, IPv4-mapped IPv6 as the IPv4 (issue 23)."""

from __future__ import annotations

import pytest

from koala_async._context import normalize_ip


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("::FFFF:c000:0201", "192.0.2.1"),
        (" ::ffff:10.0.0.7 ", "10.0.0.7"),
        ("192.0.2.1", "192.0.2.1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("::1", "::1"),
        ("64:ff9b::192.0.2.1", "64:ff9b::c000:201"),  # NAT64 is not IPv4-mapped
        ("testclient", None),
        (None, None),
    ],
)
def test_addresses_are_sent_canonical_and_mapped_ipv4_as_ipv4(given: object, sent: str) -> None:
    assert normalize_ip(given) == sent
