"""Resolving the options a client was given: over the defaults, and a name no client takes
raises as a misspelt keyword does, with a hint that helps."""

from __future__ import annotations

import pytest

from koala_async._options import DEFAULTS, resolve


def test_the_options_given_override_the_defaults_and_the_rest_are_filled_in() -> None:
    resolved = resolve({"flush_interval": 2.5, "strict": True}, "KoalaClient")
    assert resolved == {**DEFAULTS, "flush_interval": 2.5, "strict": True}
    assert resolve({}, "KoalaClient") == dict(DEFAULTS)


def test_a_name_like_no_option_lists_every_option() -> None:
    with pytest.raises(TypeError) as raised:
        resolve({"zzz": 1}, "KoalaSyncClient")
    assert str(raised.value) == (
        "KoalaSyncClient() got an unexpected keyword argument 'zzz'; it takes "
        + ", ".join(DEFAULTS)
    )


def test_of_several_unknown_names_the_first_in_order_is_named() -> None:
    with pytest.raises(TypeError, match=r"argument 'max_queue'; did you mean 'max_queue_size'\?$"):
        resolve({"timeuot": 1, "max_queue": 5}, "KoalaClient")
