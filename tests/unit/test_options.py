"""The options, declared once (ClientOptions): both clients take every one of them."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from koala_async import ClientOptions, KoalaClient, KoalaSyncClient
from koala_async._options import DEFAULTS


def test_every_declared_option_has_a_default_and_no_default_is_undeclared() -> None:
    assert set(ClientOptions.__annotations__) == set(DEFAULTS)


@pytest.mark.parametrize("face", [KoalaClient, KoalaSyncClient])
def test_a_misspelt_option_raises_naming_the_closest(face: Any) -> None:
    options: typing.Any = {"flush_intervall": 2.0}
    with pytest.raises(TypeError, match="'flush_intervall'; did you mean 'flush_interval'"):
        face("pk_test", **options)


@pytest.mark.parametrize("face", [KoalaClient, KoalaSyncClient])
def test_both_clients_check_the_spool_options(face: Any) -> None:
    """The sync client took no spool options before they were declared once."""
    from koala_async import ValidationError

    options: typing.Any = {"spool": "/tmp/koala.db", "spool_max_bytes": 10}
    with pytest.raises(ValidationError, match="spool_max_bytes"):
        face("pk_test", **options)
