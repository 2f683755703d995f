"""The README's examples run as written (the docs pages': tests/system/test_docs.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from koala_async.testing import FakeCollector

pytestmark = pytest.mark.anyio
README = (Path(__file__).parents[2] / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


async def test_the_quickstart_runs_against_a_local_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    quickstart = python_blocks()[0]
    assert "anyio.run(main)" in quickstart
    fake = FakeCollector()
    async with fake.serve() as base_url:
        monkeypatch.setenv("KOALA_BASE_URL", base_url)
        namespace: dict[str, object] = {}
        exec(quickstart.replace("anyio.run(main)", ""), namespace)
        await namespace["main"]()  # type: ignore[operator]
    assert fake.violations == []
    assert len(fake.events) == len(fake.identifies) == len(fake.page_views) == 1
    assert len(fake.accounts) == 2
    traits = [e.data["traits"] for e in fake.accounts if e.type == "identify"]
    assert traits == [{"headcount": 100, "group_id": "marketing-team"}]


async def test_the_fastapi_quickstart_tracks_the_visitor(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    [quickstart] = [block for block in python_blocks() if "koala_async.fastapi" in block]
    fake = FakeCollector()
    async with fake.serve() as base_url:
        monkeypatch.setenv("KOALA_BASE_URL", base_url)
        monkeypatch.setenv("KOALA_PUBLIC_API_KEY", "pk_test")
        namespace: dict[str, Any] = {}
        exec(quickstart, namespace)
        app = namespace["app"]
        async with app.router.lifespan_context(app):  # what a server does at start and stop
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="https://acme.com") as web:
                response = await web.post("/login", params={"email": "ada@acme.com"})
    assert response.json() == {"ok": "yes"}
    ko_id = response.cookies["ko_id"]
    assert [(e.profile_id, e.email) for e in fake.identifies] == [(ko_id, "ada@acme.com")]
    assert [(e.profile_id, e.event) for e in fake.events] == [(ko_id, "Logged In")]
    assert fake.violations == []


def test_the_development_commands_ci_runs_are_in_the_readme() -> None:
    """.ci/run and a new user follow these lines: they must not drift out of the README."""
    for command in (
        "pip install .",
        "koala-async demo",
        "python -m pip install nox",
        "python -m nox",
    ):
        assert command in README, command
