"""Which hosts a connection races addresses for (a name may have several; an address not)."""

from __future__ import annotations

import pytest

from koala_async._aio import _is_address


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "::1", "2001:db8::1"])
def test_an_address_is_connected_to_without_a_race(host: str) -> None:
    assert _is_address(host)


@pytest.mark.parametrize("host", ["localhost", "api2.getkoala.com", "127.0.0.1.nip.io", ""])
def test_a_name_is_raced(host: str) -> None:
    assert not _is_address(host)
