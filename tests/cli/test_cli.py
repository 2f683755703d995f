"""The koala-async command line, run as a user runs it: ``python -m koala_async …`` in a subprocess,
against a collector on 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import anyio
import httpx
import pytest
from wire_check import free_port

from koala_async.cli._progress import Progress, Snapshot
from koala_async.testing import FakeCollector, Received, Reply

pytestmark = pytest.mark.anyio
PID = "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"


# Runs the real entry point and reports the process's own peak RSS on stderr as it exits.
# VmHWM, not ru_maxrss: the latter survives exec, so it would count the forked pytest process.
_MAIN = (
    "import atexit, re, runpy, sys; "
    "atexit.register(lambda: print('peak-rss-kb', re.search(r'VmHWM:\\s+(\\d+)', "
    "open('/proc/self/status').read())[1], file=sys.stderr)); "
    "sys.argv[0] = 'koala-async'; runpy.run_module('koala_async', run_name='__main__')"
)


async def cli(*args: str, base_url: str | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "KOALA_PUBLIC_API_KEY": "pk_cli", "NO_COLOR": "1"}
    if base_url:
        env["KOALA_BASE_URL"] = base_url
    return await anyio.run_process([sys.executable, "-c", _MAIN, *args], env=env, check=False)


def peak_rss_mb(result: subprocess.CompletedProcess[bytes]) -> float:
    line = result.stderr.decode().rsplit("peak-rss-kb ", 1)[1]
    return int(line.split()[0]) / 1024


async def test_demo_exits_zero_and_its_summary_matches() -> None:
    result = await cli("demo", "--people", "30")
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "MISMATCH" not in out
    for kind in ("page_views", "identifies", "events", "account identifies", "account events"):
        assert f"  {kind}" in out
    assert "spec violations          0" in out


async def test_send_track_reaches_the_collector() -> None:
    fake = FakeCollector()
    async with fake.serve() as base_url:
        result = await cli(
            "send",
            "track",
            "Signed Up",
            "--email",
            "ada@acme.com",
            "--prop",
            "plan=pro",
            "--prop",
            "seats=12",
            base_url=base_url,
        )
        account = await cli(
            "send",
            "account-identify",
            "--domain",
            "https://www.acme.com",
            "--group-id",
            "dev",
            "--trait",
            "vip=true",
            base_url=base_url,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith("delivered: track (message_id ")
    assert [(e.email, e.data["event"], e.data["properties"]) for e in fake.events] == [
        ("ada@acme.com", "Signed Up", {"plan": "pro", "seats": 12})
    ]
    assert account.returncode == 0, account.stderr
    assert fake.accounts[0].domain == "acme.com"
    assert fake.accounts[0].data["traits"] == {"vip": True, "group_id": "dev"}
    assert fake.requests[0].headers["user-agent"].startswith("koala-async-cli koala-async/")


async def test_send_says_what_went_wrong() -> None:
    bad = await cli("send", "track", "Signed Up", "--email", "not-an-email")
    assert bad.returncode == 2
    assert "email must be an address" in bad.stderr.decode()
    fake = FakeCollector(responder=lambda received: Reply(401))
    async with fake.serve() as base_url:
        refused = await cli("send", "identify", "--email", "a@b.co", base_url=base_url)
    assert refused.returncode == 1
    assert "refused the public API key" in refused.stderr.decode()
    assert "pk_cli" not in refused.stderr.decode()


def _write_lines(path: Path, lines: int, people: int) -> list[str]:
    ids = []
    with path.open("w") as file:
        for i in range(lines):
            message_id = f"m-{i}"
            ids.append(message_id)
            call = {
                "kind": "track",
                "event": "Imported",
                "email": f"p{i % people}@acme.com",
                "properties": {"i": i},
                "message_id": message_id,
            }
            file.write(json.dumps(call) + "\n")
    return ids


async def test_a_100k_line_import_delivers_every_line_once_in_bounded_memory(
    tmp_path: Path,
) -> None:
    source = tmp_path / "events.jsonl"
    ids = _write_lines(source, 100_000, people=2_000)
    fake = FakeCollector()
    async with fake.serve() as base_url:
        result = await cli("import", str(source), base_url=base_url)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert fake.message_ids() == Counter(dict.fromkeys(ids, 1))
    assert fake.violations == []
    assert "read 100,000, delivered 100,000, rejected 0, failed 0" in result.stdout.decode()
    assert "import: " in result.stderr.decode(), "progress lines when not on a terminal"
    # The whole file as Python dicts would take well over 100 MB; the queue holds 100k at most.
    peak_mb = peak_rss_mb(result)
    assert peak_mb < 120, f"peak RSS of the import was {peak_mb:.0f} MB"
    assert not (tmp_path / "events.jsonl.dead.jsonl").exists()


async def test_bad_lines_go_to_a_dead_letter_file_that_finishes_the_job(tmp_path: Path) -> None:
    source = tmp_path / "mixed.jsonl"
    source.write_text(
        "\n".join(
            [
                json.dumps({"kind": "track", "event": "Ok", "email": "a@acme.com"}),
                json.dumps({"kind": "track", "event": "Bad email", "email": "nope"}),
                "{not json",
                json.dumps({"kind": "page", "profile_id": PID, "name": "Home"}),
                json.dumps({"kind": "teleport", "email": "a@acme.com"}),
                json.dumps({"kind": "identify", "email": "b@acme.com", "traits": {"x": 1}}),
                json.dumps({"kind": "track", "event": "Rejected", "email": "reject@acme.com"}),
            ]
        )
        + "\n"
    )
    fake = FakeCollector()
    fake.responder = lambda r: Reply(422) if r.body.get("email") == "reject@acme.com" else None
    async with fake.serve() as base_url:
        first = await cli("import", str(source), base_url=base_url)
        dead = tmp_path / "mixed.jsonl.dead.jsonl"
        assert first.returncode == 1
        assert "read 7, delivered 3, rejected 3, failed 1" in first.stdout.decode()
        lines = source.read_text().splitlines(keepends=True)
        assert dead.read_text() == "".join(lines[i] for i in (1, 2, 4, 6)), "byte for byte"
        reasons = dead.with_name(dead.name + ".reasons.jsonl").read_text().splitlines()
        why = [json.loads(line) for line in reasons]
        assert [(w["line"], w["dead_line"], w["error"][:22]) for w in why] == [
            (2, 1, "email must be an addre"),
            (3, 2, "not JSON: JSON is malf"),
            (5, 3, "kind must be one of tr"),
            (7, 4, "rejected (HTTP 422)"),
        ]
        # fix them: correct the email, drop the junk, and let the server take the rest
        fixed = [
            line.replace('"nope"', '"fixed@acme.com"') for line in dead.read_text().split("\n")
        ]
        retry = tmp_path / "retry.jsonl"
        retry.write_text("\n".join(line for line in fixed if '"kind": "track"' in line) + "\n")
        fake.responder = None
        second = await cli("import", str(retry), base_url=base_url)
    assert second.returncode == 0, second.stdout.decode() + second.stderr.decode()
    events = sorted(e.data["event"] for e in fake.events)
    assert events == ["Bad email", "Ok", "Rejected"]
    assert len(fake.page_views) == len(fake.identifies) == 1
    assert max(fake.message_ids().values()) == 1


async def test_dry_run_sends_nothing(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    _write_lines(source, 50, people=5)
    with source.open("a") as file:
        file.write(json.dumps({"kind": "track", "event": "", "email": "a@b.co"}) + "\n")
    fake = FakeCollector()
    async with fake.serve() as base_url:
        result = await cli("import", str(source), "--dry-run", base_url=base_url)
    assert result.returncode == 1
    assert "read 51, checked 50, rejected 1, failed 0" in result.stdout.decode()
    assert fake.requests == []


async def test_csv_import_with_a_column_mapping(tmp_path: Path) -> None:
    source = tmp_path / "accounts.csv"
    source.write_text("company,team,plan\nacme.com,dev,pro\nglobex.com,,free\n")
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
            "group_id=team",
            "--map",
            "traits.plan=plan",
            base_url=base_url,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    traits = sorted((e.domain, json.dumps(e.data["traits"], sort_keys=True)) for e in fake.accounts)
    assert traits == [
        ("acme.com", '{"group_id": "dev", "plan": "pro"}'),
        ("globex.com", '{"plan": "free"}'),
    ]


async def test_the_collector_command_prints_batches_and_writes_jsonl(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "received.jsonl"
    env = {**os.environ, "NO_COLOR": "1"}
    command = [
        sys.executable,
        "-m",
        "koala_async",
        "collector",
        "--port",
        str(port),
        "--jsonl",
        str(log),
    ]
    async with await anyio.open_process(command, env=env) as process:
        assert process.stdout is not None
        banner = b""
        with anyio.fail_after(20):
            while b"listening" not in banner:
                banner += await process.stdout.receive()
        base_url = f"http://127.0.0.1:{port}"
        sent = await cli("send", "track", "Hello", "--email", "ada@acme.com", base_url=base_url)
        async with httpx.AsyncClient() as http:
            bad = await http.post(
                f"{base_url}/web/projects/pk/batch",
                json={"email": "x"},
                headers={"User-Agent": "test"},
            )
        output = b""
        with anyio.move_on_after(2):
            while output.count(b"\n") < 3:
                output += await process.stdout.receive()
        process.terminate()
    assert sent.returncode == 0
    text = output.decode()
    assert "200 profile email=ada@acme.com events=1" in text
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[0]["body"]["events"][0]["event"] == "Hello"
    assert (records[0]["kind"], records[0]["key"]) == ("profile", "…")
    assert "pk_cli" not in log.read_text(), "the key is redacted"
    assert bad.status_code == 400
    assert "spec violation: email 'x' is not an address" in text
    assert records[1]["status"] == 400


async def _drain(stream: anyio.abc.ByteReceiveStream) -> None:
    async for _ in stream:
        pass


@pytest.mark.parametrize("presses", [1, 2])
async def test_ctrl_c_stops_an_import_which_then_says_how_to_finish_the_job(
    tmp_path: Path, presses: int
) -> None:
    source = tmp_path / "events.jsonl"
    ids = _write_lines(source, 60_000, people=100)  # more than the import's queue holds
    slow, sending = True, anyio.Event()

    def answer(received: Received) -> Reply | None:
        sending.set()
        return Reply(delay=0.5) if slow else None

    fake = FakeCollector(responder=answer)
    env = {**os.environ, "KOALA_PUBLIC_API_KEY": "pk_cli"}
    async with fake.serve() as base_url:
        env["KOALA_BASE_URL"] = base_url
        command = [sys.executable, "-m", "koala_async", "import", str(source)]
        async with await anyio.open_process(command, env=env) as process:
            assert process.stdout is not None
            assert process.stderr is not None
            with anyio.fail_after(30):
                await sending.wait()  # by now its Ctrl-C handler is in place
                process.send_signal(signal.SIGINT)  # stop reading, deliver what is queued
                if presses == 2:
                    said = b""
                    while b"Ctrl-C again to give up" not in said:
                        said += await process.stderr.receive()
                    process.send_signal(signal.SIGINT)  # give up on what is queued
                slow = False
                async with anyio.create_task_group() as drain:  # a full pipe would block it
                    drain.start_soon(_drain, process.stderr)
                    out = b"".join([chunk async for chunk in process.stdout]).decode()
                    await process.wait()
        assert process.returncode == 130, out
        numbers = re.search(r"read ([\d,]+), delivered ([\d,]+), rejected 0, failed 0", out)
        assert "Interrupted. Finish the file with --resume (or --start-line " in out
        assert numbers is not None, out
        read, delivered = (int(n.replace(",", "")) for n in numbers.groups())
        resume_at = int(out.rsplit("--start-line ", 1)[1].split(")")[0])
        assert not (tmp_path / "events.jsonl.dead.jsonl").exists(), "no line is at fault"
        if presses == 1:  # everything read was delivered: resume after it
            assert (resume_at, delivered) == (read + 1, read)
        else:  # given up: resume after the last line known delivered
            unsent = int(out.split("not sent ")[1].split()[0].replace(",", ""))
            assert delivered + unsent == read
            assert resume_at <= delivered + 1
        rest = await cli("import", str(source), "--resume", base_url=base_url)
    assert rest.returncode == 0, rest.stderr.decode()[-2000:]
    assert f"resuming at line {resume_at:,}" in rest.stderr.decode()
    assert set(fake.message_ids()) == set(ids), "every line delivered"
    if presses == 1:
        assert fake.message_ids() == Counter(dict.fromkeys(ids, 1)), "every line exactly once"


async def test_dead_letters_accumulate_and_never_overwrite_the_input(tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps({"kind": "track", "event": "", "email": "a@b.co"}) + "\n")
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing is sent: the line is invalid
    first = await cli("import", str(source), base_url=nowhere)
    second = await cli("import", str(source), base_url=nowhere)
    dead = tmp_path / "bad.jsonl.dead.jsonl"
    assert first.returncode == second.returncode == 1
    assert "holds earlier dead letters; new ones are appended" in second.stderr.decode()
    assert len(dead.read_text().splitlines()) == 2
    same = await cli("import", str(source), "--dead-letter", str(source))
    assert same.returncode == 2
    assert "--dead-letter must not be the file being imported" in same.stderr.decode()
    assert len(source.read_text().splitlines()) == 1


async def test_send_gives_up_when_nothing_listens() -> None:
    port = free_port()  # nothing listens there
    result = await cli(
        "send", "page", "--email", "a@b.co", "--timeout", "1", base_url=f"http://127.0.0.1:{port}"
    )
    assert result.returncode == 1
    assert "not delivered within 1s" in result.stderr.decode()
    assert "ConnectError" in result.stderr.decode()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_with_rate_and_eta_on_a_terminal_and_plain_lines_elsewhere() -> None:
    terminal, pipe = _Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = Progress(stream)
        stream.write(progress.line(Snapshot(read=100, read_fraction=0.25, settled=100), 2.0))
        stream.write(progress.line(Snapshot(400, 1.0, 400), 4.0, final=True))
    assert terminal.getvalue().startswith("\r[#######                       ]  25.0% 100 of 100")
    assert "/s, ETA 6s" in terminal.getvalue()
    assert terminal.getvalue().endswith("\n")
    assert pipe.getvalue().splitlines()[0].startswith("import: 25%, 100 of 100 lines done, ")
    assert "\r" not in pipe.getvalue()


def test_the_eta_counts_entries_still_to_deliver_not_only_lines_read() -> None:
    progress = Progress(io.StringIO())
    # The whole file is read, but half of it still waits in the queue: not done, not 100%.
    line = progress.line(Snapshot(20_000, 1.0, 10_000, "ConnectError: refused"), 10.0)
    assert line.startswith("import: 50%, 10,000 of 20,000 lines done")
    assert "ETA 10s" in line
    assert "last error: ConnectError: refused" in line


async def test_an_import_stops_reading_when_koala_refuses_the_key_for_good(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    ids = _write_lines(source, 30_000, people=1_000)
    fake = FakeCollector(responder=lambda received: Reply(401, body=b'{"error": "unauthorized"}'))
    async with fake.serve() as base_url:
        result = await cli("import", str(source), "--queue-size", "2000", base_url=base_url)
    out = result.stdout.decode()
    assert result.returncode == 1, out
    assert "refused the public API key" in out
    assert "Finish the file with --resume (or --start-line 1)" in out
    counted = re.search(r"read ([\d,]+), ", out)
    assert counted is not None, out
    read = int(counted[1].replace(",", ""))
    assert f"read {read:,}, delivered 0, rejected 0, failed 0, not sent {read:,}" in out
    assert read < len(ids), "it stopped reading early"
    assert not (tmp_path / "events.jsonl.dead.jsonl").exists(), "the lines are not at fault"
