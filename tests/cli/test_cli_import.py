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


async def test_an_unreachable_endpoint_fails_fast_and_dead_letters_what_was_read(
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
    assert f"Stopped: nothing was delivered to {url}: ConnectError" in out
    assert key not in out + err
    assert "last error: ConnectError" in err, "the progress line shows the cause"
    letters = (tmp_path / "events.jsonl.dead.jsonl").read_text().splitlines()
    assert len(letters) == 50
    assert "read 50, delivered 0, rejected 0, failed 50" in out


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
    (letter,) = (json.loads(line) for line in dead.read_text().splitlines())
    assert (letter["email"], letter["_error"]) == ("p0@acme.com", "rejected (HTTP 422)")


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
        assert len(dead.read_text().splitlines()) == 2
        fixed = [json.loads(line) for line in dead.read_text().splitlines()]
        fixed[0]["event"] = "Fixed"
        write(dead, *fixed)
        fake.responder = None
        again = await cli("import", str(dead), base_url=base_url)
        assert again.returncode == 0, again.stdout.decode() + again.stderr.decode()
        assert f"every letter of {dead} is delivered: removed it" in again.stdout.decode()
        assert not dead.exists()
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
    (letter,) = (tmp_path / "accounts.csv.dead.jsonl").read_text().splitlines()
    assert "column 'seats' as int" in json.loads(letter)["_error"]


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
