"""``koala-async collector`` as a subprocess (issue 15): a taken port, every violation of a
request, event names, and keys in ``--jsonl`` that can be told apart."""

from __future__ import annotations

import json
import os
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
