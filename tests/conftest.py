"""Shared fixtures: every async test runs on asyncio and on trio, and every client a test
made keeps the stats invariant when the test ends."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest
from wire_check import invariant

from koala_async import KoalaClient


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def every_client_keeps_the_invariant(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """After each test, every KoalaClient it made (the sync client's engine included) keeps
    accepted == delivered + dropped + pending with no count below zero, and a closed one has
    nothing pending: every entry ended in exactly one counted outcome."""
    made: list[KoalaClient] = []
    init = KoalaClient.__init__

    @functools.wraps(init)  # inspect.signature(KoalaClient) still shows the real one
    def recording_init(self: KoalaClient, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(KoalaClient, "__init__", recording_init)
    yield
    for client in made:
        stats = client.stats()
        invariant(stats)
        if client._state.value == "closed":  # what is still pending waits in the spool
            assert stats.pending == stats.spooled, f"closed with entries unaccounted for: {stats}"
