"""``koala-async spool PATH``: show, ``--export`` as importer lines, ``--send`` to a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from wire_check import free_port

from koala_async import KoalaClient
from koala_async.cli import main
from koala_async.cli._read import calls_from_jsonl
from koala_async.testing import FakeCollector

pytestmark = pytest.mark.anyio


async def fill(path: Path, url: str) -> list[str]:
    """Leave entries of every kind in a spool: the endpoint is down and the deadline short."""
    async with KoalaClient("pk_test", base_url=url, spool=path, shutdown_timeout=0.05) as koala:
        ids = [
            await koala.track("Signed Up", email="ada@acme.com", properties={"plan": "pro"}),
            await koala.identify(profile_id="3e6a2c18-3b02-40c4-b8d2-1842c193d3ba",
                                 email="ada@acme.com", traits={"n": 1}),
            await koala.page(email="bob@acme.com", name="Home"),
            await koala.account_identify(domain="acme.com", traits={"seats": 3}, group_id="dev"),
            await koala.account_track("Workspace Created", account_id="acct-1"),
        ]  # fmt: skip
    assert koala.stats().spooled == 5
    return [mid for mid in ids if mid is not None]


async def test_show_export_and_send(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOALA_PUBLIC_API_KEY", "pk_cli")
    path = tmp_path / "spool.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ids = await fill(path, url)
    capsys.readouterr()

    assert await anyio.to_thread.run_sync(main, ["spool", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "5 entries" in shown
    assert "5 people or accounts" in shown  # ada by email, and by profile_id

    out = tmp_path / "spool.jsonl"
    assert await anyio.to_thread.run_sync(main, ["spool", str(path), "--export", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["message_id"] for line in lines] == ids
    calls = list(calls_from_jsonl(out.read_text().splitlines()))
    assert [c.kind for c in calls] == [
        "track", "identify", "page", "account_identify", "account_track"
    ]  # fmt: skip
    assert all(c.error is None for c in calls)
    assert lines[3]["traits"] == {"seats": 3, "group_id": "dev"}

    fake = FakeCollector()
    async with fake.serve(port=port):
        code = await anyio.to_thread.run_sync(
            main, ["spool", str(path), "--send", "--base-url", url]
        )
    assert code == 0
    assert "delivered 5 entries" in capsys.readouterr().out
    assert sorted(fake.message_ids()) == sorted(ids)
    assert fake.violations == []
    assert await anyio.to_thread.run_sync(main, ["spool", str(path)]) == 0
    assert "0 entries" in capsys.readouterr().out


async def test_send_refuses_a_spool_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "spool.db"
    url = f"http://127.0.0.1:{free_port()}"
    async with KoalaClient("pk_test", base_url=url, spool=path, shutdown_timeout=0):
        args = ["spool", str(path), "--send", "--key", "pk_cli", "--base-url", url]
        assert await anyio.to_thread.run_sync(main, args) == 2
    assert "in use by process" in capsys.readouterr().err


def test_a_missing_spool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spool", str(tmp_path / "nothing.db")]) == 2
    assert "there is no spool at" in capsys.readouterr().err
    assert not (tmp_path / "nothing.db").exists()


def test_the_spool_benchmark_runs(tmp_path: Path) -> None:
    """benchmarks/spool.py --quick gives every figure (none is asserted on: timings)."""
    out = tmp_path / "figures.json"
    script = Path(__file__).parents[2] / "benchmarks" / "spool.py"
    subprocess.run([sys.executable, str(script), "--quick", "--json", str(out)], check=True)
    figures = json.loads(out.read_text())
    assert figures["calls"] == 2000
    assert figures["bytes_per_entry_pages"] > 179  # the entry, and the row around it
    assert {"hot_ratio", "cpu_ratio", "write_entries_per_s_client"} <= set(figures)
