"""Sync code under an ASGI server: SIGTERM delivers what the app tracked. uvicorn re-raises
SIGTERM after its shutdown, so atexit never runs: close_on_shutdown closes the client in the
lifespan's shutdown (uvicorn and hypercorn both run it)."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sync_support import collector, message_ids, wait_until_listening
from wire_check import free_port

APP = """
import os

from koala_async import KoalaSyncClient
from koala_async.asgi import close_on_shutdown

koala = KoalaSyncClient("pk_test", base_url=os.environ["KOALA_BASE_URL"], flush_interval=3600)


async def app(scope, receive, send):
    message_id = koala.track("Seen", email="ada@acme.com")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": message_id.encode()})


application = close_on_shutdown(app, koala)
"""


def get(port: int) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/")
        return connection.getresponse().read().decode()
    finally:
        connection.close()


SERVERS = {
    "uvicorn": ["uvicorn", "sync_app:application", "--port", "{port}", "--lifespan", "on"],
    "hypercorn": ["hypercorn", "sync_app:application", "--bind", "127.0.0.1:{port}"],
}


@pytest.mark.parametrize("server_name", sorted(SERVERS))
def test_sigterm_delivers_what_a_sync_client_took(tmp_path: Path, server_name: str) -> None:
    pytest.importorskip(server_name)
    (tmp_path / "sync_app.py").write_text(APP)
    port = free_port()
    with collector(tmp_path) as (base_url, log):
        arguments = [a.format(port=port) for a in SERVERS[server_name]]
        command = [sys.executable, "-m", *arguments]
        server = subprocess.Popen(
            command,
            env={**os.environ, "KOALA_BASE_URL": base_url, "PYTHONPATH": str(tmp_path)},
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_until_listening(port, server)
            ids = [get(port) for _ in range(10)]
            server.send_signal(signal.SIGTERM)
            _, stderr = server.communicate(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        arrived = message_ids(log)
    assert len(set(ids)) == 10
    assert {m: arrived[m] for m in ids} == dict.fromkeys(ids, 1), stderr.decode()
