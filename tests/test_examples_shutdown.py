"""The examples, run as real servers in their own processes: SIGTERM delivers everything queued."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from koala_async.testing import FakeCollector

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parent.parent
COMMANDS = {
    "fastapi": [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--port", "{port}"],
    "aiohttp": [sys.executable, "examples/aiohttp_app.py"],
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_until_listening(port: int, process: anyio.abc.Process) -> None:
    with anyio.fail_after(30):
        while True:
            assert process.returncode is None, "the example exited before it listened"
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.1)
            else:
                await stream.aclose()
                return


@pytest.mark.parametrize("example", ["fastapi", "aiohttp"])
async def test_sigterm_delivers_every_event(example: str) -> None:
    fake = FakeCollector()
    port = free_port()
    async with fake.serve() as base_url:
        env = {
            **os.environ,
            "KOALA_BASE_URL": base_url,
            "KOALA_PUBLIC_API_KEY": "pk_example_test",
            "KOALA_FLUSH_INTERVAL": "3600",  # nothing leaves before shutdown unless we flush
            "PORT": str(port),
        }
        command = [part.format(port=port) for part in COMMANDS[example]]
        process = await anyio.open_process(
            command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            await wait_until_listening(port, process)
            profile_ids = set()
            for visitor in range(20):
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as browser:
                    first = await browser.get("/")
                    await browser.get("/pricing")
                    email = f"user{visitor}@company{visitor % 3}.com"
                    signed = await browser.post("/signup", json={"email": email, "plan": "pro"})
                    assert signed.status_code == 200
                    assert first.json()["profile_id"] == signed.json()["profile_id"]
                    profile_ids.add(signed.json()["profile_id"])
            assert fake.requests == [], "everything is still queued in the app"
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                returncode = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            assert process.stderr is not None
            await process.stderr.aclose()
    # uvicorn re-raises SIGTERM once its graceful shutdown is done; aiohttp exits 0
    assert returncode == (-signal.SIGTERM if example == "fastapi" else 0)
    assert fake.violations == []
    assert len(fake.page_views) == 40
    assert {e.profile_id for e in fake.page_views} == profile_ids
    assert len(fake.identifies) == len(fake.events) == 20
    assert sorted(e.type for e in fake.accounts) == ["identify"] * 20 + ["track"] * 20
    assert {e.domain for e in fake.accounts} == {"company0.com", "company1.com", "company2.com"}
    assert max(fake.message_ids().values()) == 1
