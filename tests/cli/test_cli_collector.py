"""``koala-async collector`` as a subprocess (issue 15): a taken port, every violation of a
request, event names, and keys in ``--jsonl`` that can be told apart."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from wire_check import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the collector runs in its own process; the test's loop only sends


def collector(*args: str) -> list[str]:
    return [sys.executable, "-m", "koala_async", "collector", *args]


async def test_a_port_in_use_is_one_line_that_says_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await anyio.run_process(collector("--port", str(port)), check=False)
    assert result.returncode == 2
    assert result.stderr.decode() == f"koala-async: port {port} is in use; pass --port\n"


async def test_it_shows_event_names_every_violation_and_tells_keys_apart(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "got.jsonl"
    env = {**os.environ, "NO_COLOR": "1"}
    async with await anyio.open_process(
        collector("--port", str(port), "--jsonl", str(log)), env=env
    ) as process:
        assert process.stdout is not None
        output = b""
        with anyio.fail_after(20):
            while b"listening" not in output:
                output += await process.stdout.receive()
        base = f"http://127.0.0.1:{port}/web/projects"
        headers = {"User-Agent": "tests/1.0"}
        good = {"email": "a@b.co", "events": [{"type": "track", "event": "Signed Up"}]}
        bad = {"profile_id": "nope", "events": [{"type": "track", "sent_at": "noon"}]}
        async with httpx.AsyncClient() as http:
            for key, body in (("pk_live_aaaa11", good), ("pk_live_aaaa22", bad)):
                await http.post(f"{base}/{key}/batch", json=body, headers=headers)
        with anyio.fail_after(20):
            while output.count(b"spec violation") < 3:
                output += await process.stdout.receive()
        process.terminate()
    text = output.decode()
    assert "200 profile email=a@b.co events=1 (Signed Up)" in text
    for problem in ("'nope' is not a UUID", "events[0].event must be", "sent_at 'noon'"):
        assert problem in text, text
    keys = [json.loads(line)["key"] for line in log.read_text().splitlines()]
    assert keys == ["pk_l…11", "pk_l…22"]


async def test_it_prints_totals_on_request_and_on_exit() -> None:
    port = free_port()
    async with await anyio.open_process(collector("--port", str(port))) as process:
        assert process.stdout is not None
        output = b""

        async def read_until(text: bytes) -> None:
            nonlocal output
            with anyio.fail_after(20):
                while text not in output:
                    output += await process.stdout.receive()  # type: ignore[union-attr]

        await read_until(b"totals: kill -USR1")
        url = f"http://127.0.0.1:{port}"
        headers = {"User-Agent": "tests/1.0"}
        events = [{"type": "track", "event": "E", "message_id": m} for m in ("a", "b", "a")]
        async with httpx.AsyncClient() as http:
            for _ in range(2):  # the same entries twice: 6 entries, 2 unique ids
                body = {"email": "a@b.co", "events": events}
                await http.post(
                    f"{url}/web/projects/pk_live_aaaa11/batch", json=body, headers=headers
                )
            page = {"email": "a@b.co", "page_views": [{"type": "page", "message_id": "p"}]}
            await http.post(f"{url}/web/projects/pk_live_aaaa11/batch", json=page, headers=headers)
            totals = (await http.get(f"{url}/_totals")).json()
        assert totals["requests"] == 3
        assert [(r["type"], r["entries"], r["unique_ids"]) for r in totals["totals"]] == [
            ("page", 1, 1),
            ("track", 6, 2),
        ]
        process.send_signal(signal.SIGUSR1)
        await read_until(b"unique ids")
        assert process.returncode is None, "SIGUSR1 only prints"
        process.terminate()
        with anyio.fail_after(20):
            await process.wait()
        output += b"".join([chunk async for chunk in process.stdout])
    text = output.decode()
    assert process.returncode == 0
    assert text.count("totals: 3 requests, 0 refused") == 2, "on request and on exit"
    assert "pk_l…11    profile  track     entries          6  unique ids          2" in text
