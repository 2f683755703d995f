"""``koala-async import``, through the real entry point, against a collector on 127.0.0.1
(issue 15: repeated lines, an unreachable endpoint, dead letters, CSV mistakes, logging)."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import anyio
import pytest
from test_cli import cli
from wire_check import free_port

from koala_async.testing import FakeCollector, Received, Reply

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the CLI runs in its own process; the test's loop only serves


def reasons(dead: Path) -> Path:
    return dead.with_name(dead.name + ".reasons.jsonl")


def write(path: Path, *calls: Mapping[str, object]) -> Path:
    path.write_text("".join(json.dumps(call) + "\n" for call in calls))
    return path


async def test_identical_lines_are_distinct_events_and_a_reimport_sends_the_same_ids(
    tmp_path: Path,
) -> None:
    event = {"kind": "account_track", "event": "Seat Added", "domain": "acme.com"}
    identify = {"kind": "identify", "email": "ada@acme.com", "traits": {"plan": "pro"}}
    source = write(tmp_path / "events.jsonl", event, event, event, identify, identify)
    fake = FakeCollector()
    async with fake.serve() as base_url:
        for _ in range(2):
            result = await cli("import", str(source), base_url=base_url)
            assert result.returncode == 0, result.stderr.decode()
    assert len(fake.accounts) == 6
    assert len(fake.identifies) == 4
    # five lines, five ids; the second import repeats them, so Koala drops the repeats
    assert sorted(fake.message_ids().values()) == [2] * 5


async def test_an_unreachable_endpoint_stops_the_import_which_then_resumes_at_its_start(
    tmp_path: Path,
) -> None:
    source = tmp_path / "events.jsonl"
    write(source, *({"kind": "track", "event": "E", "email": f"p{i}@acme.com"} for i in range(50)))
    port = free_port()  # nothing listens there
    key = "pk_live_0123456789"
    result = await cli(
        "import",
        str(source),
        "--key",
        key,
        "--timeout",
        "1",
        base_url=f"http://127.0.0.1:{port}",
    )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 1, out + err
    url = f"http://127.0.0.1:{port}/web/projects/pk_l…/batch"
    assert f"Stopped: nothing was delivered to {url} within 1s: ConnectError" in out
    assert key not in out + err
    assert "last error: ConnectError" in err, "the progress line shows the cause"
    assert "read 50, delivered 0, rejected 0, failed 0, not sent 50" in out
    assert "Finish the file with --resume (or --start-line 1)" in out
    assert not (tmp_path / "events.jsonl.dead.jsonl").exists(), "the lines are not at fault"
    fake = FakeCollector()
    async with fake.serve() as base_url:
        again = await cli("import", str(source), "--resume", base_url=base_url)
    assert again.returncode == 0, again.stderr.decode()
    assert "resuming at line 1" in again.stderr.decode()
    assert len(fake.message_ids()) == 50
    assert not (tmp_path / "events.jsonl.checkpoint").exists(), "a finished import leaves none"


async def test_dead_letters_are_written_as_they_happen(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    write(source, *({"kind": "track", "event": "E", "email": f"p{i}@acme.com"} for i in range(20)))
    dead = tmp_path / "events.jsonl.dead.jsonl"
    holding = True

    def answer(received: Received) -> Reply | None:
        if received.body.get("email") == "p0@acme.com":
            return Reply(422)
        return Reply(delay=0.2) if holding else None

    fake = FakeCollector(responder=answer)
    env = {**os.environ, "KOALA_PUBLIC_API_KEY": "pk_cli"}
    async with fake.serve() as base_url:
        env["KOALA_BASE_URL"] = base_url
        command = [sys.executable, "-m", "koala_async", "import", str(source), "--concurrency", "1"]
        async with await anyio.open_process(command, env=env) as process:
            with anyio.fail_after(30):
                while not (dead.exists() and dead.read_text()):  # noqa: ASYNC110 - another process writes it
                    await anyio.sleep(0.05)
            assert process.returncode is None, "the letter is there while the import still runs"
            holding = False
            await process.wait()
    assert process.returncode == 1
    assert dead.read_bytes() == source.read_bytes().splitlines(keepends=True)[0]
    (why,) = (json.loads(line) for line in reasons(dead).read_text().splitlines())
    assert why == {"line": 1, "dead_line": 1, "error": "rejected (HTTP 422)"}


async def test_a_dry_run_writes_no_dead_letters_and_a_delivered_dead_letter_file_goes(
    tmp_path: Path,
) -> None:
    source = write(
        tmp_path / "events.jsonl",
        {"kind": "track", "event": "Ok", "email": "a@acme.com"},
        {"kind": "track", "event": "", "email": "b@acme.com"},
        {"kind": "track", "event": "Refused", "email": "c@acme.com"},
    )
    dead = tmp_path / "events.jsonl.dead.jsonl"
    dry = await cli("import", str(source), "--dry-run")
    assert dry.returncode == 1
    assert "line 2: event must be a non-empty string" in dry.stderr.decode()
    assert not dead.exists(), "a dry run leaves nothing for the next import to repeat"
    fake = FakeCollector(
        responder=lambda r: Reply(422) if r.body["email"] == "c@acme.com" else None
    )
    async with fake.serve() as base_url:
        first = await cli("import", str(source), base_url=base_url)
        assert first.returncode == 1
        assert dead.read_text().splitlines() == source.read_text().splitlines()[1:]
        dead.write_text(dead.read_text().replace('"event": ""', '"event": "Fixed"'))
        fake.responder = None
        again = await cli("import", str(dead), base_url=base_url)
        assert again.returncode == 0, again.stdout.decode() + again.stderr.decode()
        assert f"every letter of {dead} is delivered: removed it" in again.stdout.decode()
        assert not dead.exists()
        assert not reasons(dead).exists()
        later = await cli("import", str(source), "--start-line", "4", base_url=base_url)
    assert "holds earlier dead letters" not in later.stderr.decode()
    assert sorted(e.event or "" for e in fake.events) == ["Fixed", "Ok", "Refused"]


async def test_csv_mistakes_are_refused_before_the_first_row(tmp_path: Path) -> None:
    source = tmp_path / "accounts.csv"
    source.write_text("company,seats\nacme.com,12\n")
    cases = [
        (["--kind", "account_identify", "--map", "domain=firm"], "the file has no column 'firm'"),
        (["--map", "domain=company"], "CSV: pass --kind"),
        (["--kind", "account_identify", "--map", "properties.n=seats"], "account_identify takes"),
    ]
    for args, message in cases:
        result = await cli("import", str(source), *args, base_url="http://127.0.0.1:9")
        assert result.returncode == 2, (args, result.stdout)
        assert message in result.stderr.decode(), (args, result.stderr)
        assert not (tmp_path / "accounts.csv.dead.jsonl").exists()


async def test_csv_columns_can_say_their_type(tmp_path: Path) -> None:
    source = tmp_path / "accounts.csv"
    source.write_text(
        'company,seats,vip,score,tags\nacme.com,12,yes,4.5,"[""a""]"\nb.com,x,no,1,[]\n'
    )
    fake = FakeCollector()
    async with fake.serve() as base_url:
        result = await cli(
            "import",
            str(source),
            "--kind",
            "account_identify",
            "--map",
            "domain=company",
            "--map",
            "traits.seats=seats:int",
            "--map",
            "traits.vip=vip:bool",
            "--map",
            "traits.score=score:float",
            "--map",
            "traits.tags=tags:json",
            base_url=base_url,
        )
    assert result.returncode == 1
    assert [e.traits for e in fake.accounts] == [
        {"seats": 12, "vip": True, "score": 4.5, "tags": ["a"]}
    ]
    dead = tmp_path / "accounts.csv.dead.csv"
    assert dead.read_bytes() == b"company,seats,vip,score,tags\nb.com,x,no,1,[]\n", "header, row"
    (why,) = (json.loads(line) for line in reasons(dead).read_text().splitlines())
    assert (why["line"], why["dead_line"]) == (3, 2)
    assert "column 'seats' as int" in why["error"]


async def test_log_lines_name_the_program_once_and_count_entries_in_english(
    tmp_path: Path,
) -> None:
    source = write(tmp_path / "events.jsonl", {"kind": "track", "event": "E", "email": "a@b.co"})
    fake = FakeCollector(responder=lambda received: Reply(422))
    async with fake.serve() as base_url:
        result = await cli("import", str(source), base_url=base_url)
    err, out = result.stderr.decode(), result.stdout.decode()
    assert "koala-async: warning: dropped 1 entry (rejected)" in err
    assert "koala_async: " not in err
    assert "1 dead letter in" in out
    assert Counter(fake.message_ids().values()) == Counter()


def _events(path: Path, lines: int, people: int) -> list[str]:
    """``lines`` track lines of ``people`` people, interleaved; returns their message_ids."""
    write(
        path,
        *(
            {
                "kind": "track",
                "event": "E",
                "email": f"p{i % people}@acme.com",
                "message_id": f"m{i}",
            }
            for i in range(lines)
        ),
    )
    return [f"m{i}" for i in range(lines)]


async def _run_import(source: Path, base_url: str, *args: str) -> anyio.abc.Process:
    env = {**os.environ, "KOALA_PUBLIC_API_KEY": "pk_cli", "KOALA_BASE_URL": base_url}
    command = [sys.executable, "-m", "koala_async", "import", str(source), *args]
    return await anyio.open_process(command, env=env)


async def test_an_import_waits_out_an_outage_and_resumes_when_the_endpoint_returns(
    tmp_path: Path,
) -> None:
    source = tmp_path / "events.jsonl"
    ids = _events(source, 20_000, people=5_000)
    port = free_port()
    fake = FakeCollector(responder=lambda received: Reply(delay=0.05))  # slow: 80 requests/s
    async with fake.serve(port=port) as base_url:
        process = await _run_import(source, base_url, "--timeout", "1", "--concurrency", "4")
        with anyio.fail_after(60):
            while len(fake.requests) < 20:  # noqa: ASYNC110 - another process sends them
                await anyio.sleep(0.01)
        await anyio.sleep(1)  # the first answers reach it: it has delivered something
    # The collector is gone: far longer than --timeout, which only applies to an endpoint
    # that has taken nothing yet.
    await anyio.sleep(4)
    assert process.returncode is None, "the import waits"
    fake.responder = None
    async with fake.serve(port=port):
        with anyio.fail_after(120):
            await process.wait()
    assert process.stderr is not None
    assert process.stdout is not None
    err = (await process.stderr.receive(1 << 20)).decode()
    out = (await process.stdout.receive(1 << 20)).decode()
    await process.aclose()
    assert process.returncode == 0, out + err
    assert "Error" not in err.replace("ConnectError", ""), "no internal error reaches the user"
    assert set(fake.message_ids()) == set(ids), "every line delivered"
    assert "read 20,000, delivered 20,000, rejected 0, failed 0" in out


async def test_a_killed_import_resumes_after_the_last_line_known_delivered(
    tmp_path: Path,
) -> None:
    source = tmp_path / "events.jsonl"
    ids = _events(source, 30_000, people=3_000)
    checkpoint = tmp_path / "events.jsonl.checkpoint"
    fake = FakeCollector(responder=lambda received: Reply(delay=0.02))
    async with fake.serve() as base_url:
        # A queue smaller than the file: a checkpoint covers what was read, queue included.
        process = await _run_import(source, base_url, "--concurrency", "4", "--queue-size", "2000")
        with anyio.fail_after(60):
            line = 1
            while line < 2_000:
                await anyio.sleep(0.05)
                if checkpoint.exists():
                    line = json.loads(checkpoint.read_text())["line"]
        process.kill()  # SIGKILL: no handler, no flush, no goodbye
        await process.wait()
        await process.aclose()
        line = json.loads(checkpoint.read_text())["line"]
        got = set(fake.message_ids())
        assert set(ids[: line - 1]) <= got, "every line before the checkpoint was delivered"
        assert len(got) < len(ids), "killed mid-file"
        fake.responder = None
        resumed = await cli("import", str(source), "--resume", base_url=base_url)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert f"resuming at line {line:,}" in resumed.stderr.decode()
    assert f"read {len(ids) - line + 1:,}, delivered" in resumed.stdout.decode()
    assert set(fake.message_ids()) == set(ids), "every line delivered"
    assert not checkpoint.exists()
