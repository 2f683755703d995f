"""The examples, run as real servers in their own processes: a stop signal delivers everything.

uvicorn runs the FastAPI example, ``web.run_app`` the aiohttp one; each sends to a
FakeCollector on 127.0.0.1 with a flush interval of an hour, so nothing leaves before the
signal and everything must leave after it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest
from wire_check import free_port

from koala_async.testing import FakeCollector

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parents[2]
COMMANDS = {
    "fastapi": [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--port", "{port}"],
    "aiohttp": [sys.executable, "examples/aiohttp_app.py"],
}
# After its graceful shutdown uvicorn re-raises the signal it caught, so the process ends the
# way Python ends on it: killed by SIGTERM; after SIGINT, 1 (KeyboardInterrupt), or 0 when
# SIGINT was ignored in the environment that started us (background jobs). run_app exits 0.
EXIT_CODES = {
    ("fastapi", signal.SIGTERM): {-signal.SIGTERM},
    ("fastapi", signal.SIGINT): {0, 1},
    ("aiohttp", signal.SIGTERM): {0},
    ("aiohttp", signal.SIGINT): {0},
}
VISITORS = 12


async def wait_until_listening(port: int, process: anyio.abc.Process) -> None:
    with anyio.fail_after(30):
        while True:
            assert process.returncode is None, "the example exited before it listened"
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.05)
            else:
                await stream.aclose()
                return


async def visit(port: int, visitor: int) -> str:
    """One visitor's session: two pages, a rejected signup, a signup and a login."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as browser:
        first = await browser.get("/")
        profile_id: str = first.json()["profile_id"]
        assert browser.cookies["ko_id"] == profile_id
        await browser.get("/pricing")
        rejected = await browser.post("/signup", json={"email": "not an email"})
        assert rejected.status_code == 400, "koala_async refused it at the call"
        email = f"user{visitor}@company{visitor % 3}.com"
        workspace = "marketing" if visitor % 2 else "engineering"
        signed = await browser.post(
            "/signup", json={"email": email, "plan": "pro", "workspace": workspace}
        )
        assert signed.status_code == 200
        logged = await browser.post("/login", json={"email": email})
        assert signed.json()["profile_id"] == logged.json()["profile_id"] == profile_id
        return profile_id


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("example", ["fastapi", "aiohttp"])
async def test_a_stop_signal_delivers_every_event(
    example: str, stop: signal.Signals, tmp_path: Path
) -> None:
    fake = FakeCollector()
    port = free_port()
    log = tmp_path / "stderr.txt"
    async with fake.serve(host="127.0.0.1", port=0) as base_url:
        env = {
            **os.environ,
            "KOALA_BASE_URL": base_url,
            "KOALA_PUBLIC_API_KEY": "pk_example_test",
            "KOALA_FLUSH_INTERVAL": "3600",  # nothing leaves before shutdown unless we flush
            "PORT": str(port),
        }
        command = [part.format(port=port) for part in COMMANDS[example]]
        with log.open("wb") as stderr:
            # A file, not a pipe: nobody has to drain it, and it explains a failure.
            process = await anyio.open_process(
                command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr
            )
        try:
            await wait_until_listening(port, process)
            profile_ids = {await visit(port, visitor) for visitor in range(VISITORS)}
            assert fake.requests == [], "everything is still queued in the app"
            process.send_signal(stop)
            with anyio.fail_after(30):
                returncode = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    output = log.read_text(errors="replace")
    assert returncode in EXIT_CODES[example, stop], output
    assert fake.violations == [], output
    assert len(fake.page_views) == 2 * VISITORS, output
    assert {e.profile_id for e in fake.page_views} == profile_ids
    assert len(fake.identifies) == 2 * VISITORS  # at signup and at login
    assert sorted(str(e.event) for e in fake.events) == sorted(
        ["Logged In", "Signed Up"] * VISITORS
    )
    assert sorted(e.type for e in fake.accounts) == sorted(["identify", "track"] * VISITORS)
    assert {e.domain for e in fake.accounts} == {"company0.com", "company1.com", "company2.com"}
    assert {e.traits.get("group_id") for e in fake.accounts if e.type == "identify"} == {
        "engineering",
        "marketing",
    }
    assert max(fake.message_ids().values()) == 1
