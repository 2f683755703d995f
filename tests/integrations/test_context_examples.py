"""The request context through real servers: the examples behind a (pretend) proxy.

uvicorn runs the FastAPI example with ``--proxy-headers --forwarded-allow-ips '*'``, and
``web.run_app`` the aiohttp one with ``FORWARDED_ALLOW_IPS='*'``; a request that carries
``X-Forwarded-For``, ``User-Agent`` and ``Referer`` must reach a collector on 127.0.0.1 as a
body with that top-level ``ip`` and entries whose ``context`` has that user agent and page.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from wire_check import check_request, free_port

import koala_async
from koala_async.testing import FakeCollector

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parents[2]
KEY = "pk_example_test"
VISITOR_IP = "203.0.113.7"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) context-test/1.0"
REFERRER = "https://news.example.com/item?id=42"
COMMANDS = {
    "fastapi": [
        sys.executable,
        "-m",
        "uvicorn",
        "examples.fastapi_app:app",
        "--port",
        "{port}",
        "--proxy-headers",
        "--forwarded-allow-ips",
        "*",
    ],
    "aiohttp": [sys.executable, "examples/aiohttp_app.py"],
}


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


def checked(received: Any) -> dict[str, Any]:
    """A body the collector got, checked against the spec's schemas."""
    path = "/batch" if received.kind == "profile" else "/accounts/batch"
    request = httpx.Request(
        "POST",
        f"http://127.0.0.1/web/projects/{KEY}{path}",
        headers=received.headers,
        content=received.raw,
    )
    return check_request(request, key=KEY)


@pytest.mark.parametrize("example", ["fastapi", "aiohttp"])
async def test_a_visitor_behind_a_proxy_reaches_koala_with_ip_and_context(
    example: str, tmp_path: Path
) -> None:
    fake = FakeCollector()
    port = free_port()
    log = tmp_path / "stderr.txt"
    async with fake.serve(host="127.0.0.1", port=0) as base_url:
        env = {
            **os.environ,
            "KOALA_BASE_URL": base_url,
            "KOALA_PUBLIC_API_KEY": KEY,
            "KOALA_FLUSH_INTERVAL": "3600",  # everything leaves at the stop signal
            "FORWARDED_ALLOW_IPS": "*",
            "PORT": str(port),
        }
        command = [part.format(port=port) for part in COMMANDS[example]]
        with log.open("wb") as stderr:
            process = await anyio.open_process(
                command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr
            )
        try:
            await wait_until_listening(port, process)
            headers = {
                "X-Forwarded-For": VISITOR_IP,
                "User-Agent": USER_AGENT,
                "Referer": REFERRER,
            }
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers=headers
            ) as browser:
                profile_id = (await browser.get("/pricing?utm_source=news")).json()["profile_id"]
                signup = {"email": "ada@acme.com", "plan": "pro", "workspace": "marketing"}
                assert (await browser.post("/signup", json=signup)).status_code == 200
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    output = log.read_text(errors="replace")
    assert fake.violations == [], output
    assert sorted(r.kind for r in fake.requests) == ["account", "profile"], output
    bodies = {received.kind: checked(received) for received in fake.requests}
    person, account = bodies["profile"], bodies["account"]
    assert person["profile_id"] == profile_id
    assert person["ip"] == VISITOR_IP, output
    library = {"name": "koala-async", "version": koala_async.__version__}
    [page] = person["page_views"]
    assert page["name"] == "Pricing"
    assert page["context"] == {
        "ip": VISITOR_IP,
        "userAgent": USER_AGENT,
        "page": {
            "url": f"http://127.0.0.1:{port}/pricing?utm_source=news",
            "path": "/pricing",
            "referrer": REFERRER,
            "search": "?utm_source=news",
        },
        "library": library,
    }
    # The identify names the visitor's profile_id and an email; the track names nobody.
    for entry in person["identifies"] + person["events"]:
        assert entry["context"]["userAgent"] == USER_AGENT
        assert entry["context"]["page"]["referrer"] == REFERRER
        assert entry["context"]["page"]["path"] == "/signup"
    # An account is not the visitor: no ip, no request context.
    assert "ip" not in account
    assert all("context" not in e for e in account["identifies"] + account["events"])
