"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

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


async def test_the_testing_example_passes() -> None:
    example = next(block for block in python_blocks() if "FakeCollector" in block)
    namespace: dict[str, object] = {}
    exec(example, namespace)
    await namespace["test_signup_is_tracked"]()  # type: ignore[operator]
