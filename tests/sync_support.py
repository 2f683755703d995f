"""Real processes for the sync client's tests: a collector, gunicorn, Redis, and what arrived.

Each helper starts its process on a free 127.0.0.1 port and stops it when the block ends;
nothing here shares a GIL with the code under test.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from wire_check import free_port

ROOT = Path(__file__).parent.parent


def wait_until_listening(port: int, process: subprocess.Popen[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(
                f"{process.args!r} exited ({process.returncode}) before it listened"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        else:
            return


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


@contextlib.contextmanager
def collector(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``koala-async collector --jsonl`` in its own process; yields its URL and the file."""
    port, log = free_port(), tmp_path / "received.jsonl"
    command = [sys.executable, "-m", "koala_async", "collector", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--jsonl", str(log)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until_listening(port, process)
        yield f"http://127.0.0.1:{port}", log
    finally:
        process.terminate()
        process.wait()


def received(log: Path) -> list[dict[str, Any]]:
    """The bodies the collector answered with a 2xx."""
    if not log.exists():
        return []
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(not r["violations"] for r in records), records
    return [r["body"] for r in records if 200 <= r["status"] < 300]


def message_ids(log: Path) -> Counter[str]:
    """How many times each message_id arrived in 2xx-answered requests."""
    return Counter(
        entry["message_id"]
        for body in received(log)
        for kind in ("events", "identifies", "page_views")
        for entry in body.get(kind, ())
    )


@functools.cache
def _gunicorn_flags() -> tuple[str, ...]:
    help_text = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True, check=True
    ).stdout
    # gunicorn 24 listens on a control socket in the home directory: tests run in parallel.
    return ("--no-control-socket",) if "--no-control-socket" in help_text else ()


@contextlib.contextmanager
def gunicorn(
    app: str, base_url: str, log: Path, extra: Sequence[str] = ()
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``gunicorn --preload -w 2`` serving ``app``, sending to ``base_url``, with nothing
    flushed before shutdown (an hour's flush interval)."""
    port = free_port()
    env = {
        **os.environ,
        "KOALA_BASE_URL": base_url,
        "KOALA_PUBLIC_API_KEY": "pk_gunicorn_test",
        "KOALA_FLUSH_INTERVAL": "3600",
    }
    command = [sys.executable, "-m", "gunicorn", "--preload", "-w", "2"]
    command += ["-b", f"127.0.0.1:{port}", *_gunicorn_flags(), *extra, app]
    with log.open("wb") as stderr:  # a file, not a pipe: nobody has to drain it
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        wait_until_listening(port, process)
        yield process, f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway ``redis-server`` (Debian's package); skips the test if there is none."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH (apt-get install redis-server)")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    process = subprocess.Popen(
        [*command, "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until_listening(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait()


def post_signups(base_url: str, count: int, threads: int = 8) -> list[str]:
    """POST ``count`` signups, a few at a time; return the message ids the app tracked."""
    host, port = base_url.removeprefix("http://").split(":")

    def one(i: int) -> str:
        # http.client, not httpx: a fresh httpx.Client per request loads the CA bundle.
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            body = json.dumps({"email": f"user{i}@acme.com"})
            connection.request("POST", "/signup", body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            data = answer.read()
        finally:
            connection.close()
        assert answer.status == 200, data
        message_id: str = json.loads(data)["message_id"]
        return message_id

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(count)))
