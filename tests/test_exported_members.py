"""The public API is exactly what koala_async exports, each name with a docstring."""

from __future__ import annotations

import types

import koala_async


def test_all_matches_the_public_names() -> None:
    public = {
        name
        for name, value in vars(koala_async).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)  # submodules
    }
    assert set(koala_async.__all__) - {"__version__"} == public
    names = [name for name in koala_async.__all__ if not name.startswith("_")]
    assert names == sorted(names)


def test_every_public_name_lives_in_a_private_module_and_is_documented() -> None:
    for name in koala_async.__all__:
        if name == "__version__":
            continue
        member = getattr(koala_async, name)
        assert member.__module__.startswith("koala_async._"), name
        assert member.__doc__, name
