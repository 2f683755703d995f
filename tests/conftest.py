"""Shared fixtures: every async test runs on asyncio and on trio, and every client a test
made keeps the stats invariant when the test ends."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest
from wire_check import invariant

from koala_async._engine import Engine

_LOOPS = ["asyncio", "trio"]


@pytest.fixture(params=_LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


try:
    import uvloop  # noqa: F401
except ImportError:
    _UVLOOP = []
else:
    _UVLOOP = [pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")]


@pytest.hookimpl(tryfirst=True)  # before pytest reads the parametrize markers
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``every_loop`` (they meet the event loop's own API: the transport's
    asyncio stream, what the core awaits) run on uvloop too, where installed: uvicorn picks
    it. A test that parametrizes anyio_backend itself keeps its choice."""
    if "anyio_backend" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("every_loop") is None:
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        if marker.args and marker.args[0] == "anyio_backend":
            return
    metafunc.definition.add_marker(pytest.mark.parametrize("anyio_backend", [*_LOOPS, *_UVLOOP]))


def loop_name(anyio_backend: object) -> str:
    """The loop's library: "asyncio" (uvloop included) or "trio"."""
    return anyio_backend if isinstance(anyio_backend, str) else str(anyio_backend[0])  # type: ignore[index]


@pytest.fixture(autouse=True)
def every_client_keeps_the_invariant(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """After each test, every engine it made (under a KoalaClient or a KoalaSyncClient) keeps
    accepted == delivered + dropped + pending with no count below zero, and a closed one has
    nothing pending: every entry ended in exactly one counted outcome."""
    made: list[Engine] = []
    init = Engine.__init__

    @functools.wraps(init)
    def recording_init(self: Engine, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Engine, "__init__", recording_init)
    yield
    for engine in made:
        stats = engine.stats()
        invariant(stats)
        if engine.state.value == "closed":  # what is still pending waits in the spool
            assert stats.pending == stats.spooled, f"closed with entries unaccounted for: {stats}"
