"""The public API is exactly what koala_async exports, each name with a docstring."""

from __future__ import annotations

import types
from pathlib import Path

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


def test_every_public_name_shows_the_supported_path_and_is_documented() -> None:
    docs = Path(__file__).parents[2] / "docs" / "reference"
    readme = "\n".join(page.read_text() for page in docs.glob("*.md"))  # the API reference
    for name in koala_async.__all__:
        if name == "__version__":
            continue
        member = getattr(koala_async, name)
        if isinstance(member, (type, types.FunctionType)) and not hasattr(member, "__origin__"):
            assert member.__module__ == "koala_async", name  # never koala_async._private
            assert member.__doc__, name
        else:  # a type alias for annotations (OnError, BeforeSend, DropReason)
            assert f"`{name}`" in readme, f"{name} is exported but docs/reference/ never names it"
